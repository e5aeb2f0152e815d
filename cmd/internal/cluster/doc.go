// Package cluster is the one process harness of kvtx's end-to-end and fault-injection tests
// (cmd/e2e, cmd/chaos): it builds the real binaries, writes the cluster config (YAML, on free
// ports of 127.0.0.1, with the short protocol timeouts of ShortTimeouts), and starts, waits for,
// kills, stops, pauses and resumes kvmaster and kvnode processes, each run with its own log
// file and, if asked, an armed crash point. On request it puts a fault proxy on every link
// (client → master, master → each node, each node → master) and a lossy file system under
// every process, whose power PowerCut cuts.
//
// A test builds the binaries once (Build), then makes a fresh Cluster per case with New, and
// releases it with Close. Nothing listens beyond the loopback interface, unless Config.Hosts
// puts processes on hosts of their own (network namespaces), which it then runs under a
// command prefix such as ip netns exec.
package cluster
