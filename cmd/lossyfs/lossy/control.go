package lossy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The control protocol: a client connects to the server's unix socket, sends one request line,
// reads one reply line and hangs up. Requests: "crash", "status". Replies: "ok" followed by
// key=value fields, or "error" followed by a message.
const (
	reqCrash  = "crash"
	reqStatus = "status"
)

// crashTimeout bounds how long a client waits for a crash to finish.
const crashTimeout = 2 * time.Minute

// SocketPath returns the control socket of the server mounted at mountpoint: in os.TempDir(),
// named after the first 16 hex digits of the SHA-256 of the absolute mountpoint.
func SocketPath(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "lossyfs-"+hex.EncodeToString(sum[:])[:16]+".sock"), nil
}

// Listen opens the control socket for the server of mountpoint, replacing a stale socket file
// but refusing one a live server answers on.
func Listen(mountpoint string) (net.Listener, error) {
	p, err := SocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", p, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("lossyfs: another server answers on %s for %s", p, mountpoint)
	}
	os.Remove(p)
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("lossyfs: control socket: %w", err)
	}
	return ln, nil
}

// ServeControl answers control requests on ln until ln is closed; it then returns nil.
func (s *Server) ServeControl(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		go s.answer(c)
	}
}

func (s *Server) answer(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	var reply string
	switch req := strings.TrimSpace(line); req {
	case reqCrash:
		sum, err := s.Crash()
		if err != nil {
			reply = "error " + oneLine(err)
		} else {
			reply = fmt.Sprintf("ok files=%d dropped=%d restored=%d bytes=%d",
				sum.FilesRestored, sum.EntriesDropped, sum.EntriesRestored, sum.BytesUndone)
		}
	case reqStatus:
		st, err := s.Status()
		if err != nil {
			reply = "error " + oneLine(err)
		} else {
			reply = fmt.Sprintf("ok dirty=%d pages=%d saved=%d", st.DirtyFiles, st.SavedPages, st.SavedBytes)
		}
	default:
		reply = fmt.Sprintf("error unknown request %q", req)
	}
	fmt.Fprintln(c, reply)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// request sends req to the server of mountpoint and returns the fields of its "ok" reply.
func request(mountpoint, req string, timeout time.Duration) (string, error) {
	p, err := SocketPath(mountpoint)
	if err != nil {
		return "", err
	}
	c, err := net.DialTimeout("unix", p, 5*time.Second)
	if err != nil {
		return "", fmt.Errorf("lossyfs: no server for %s: %w", mountpoint, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(c, req); err != nil {
		return "", fmt.Errorf("lossyfs: %s: %w", req, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("lossyfs: %s: no reply: %w", req, err)
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "ok"); ok {
		return strings.TrimSpace(rest), nil
	}
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return "", errors.New(msg)
	}
	return "", fmt.Errorf("lossyfs: %s: bad reply %q", req, line)
}

// RequestCrash asks the server of mountpoint to crash (see Server.Crash) and returns once the
// mount shows only the durable state.
func RequestCrash(mountpoint string) (Summary, error) {
	fields, err := request(mountpoint, reqCrash, crashTimeout)
	if err != nil {
		return Summary{}, err
	}
	var s Summary
	if _, err := fmt.Sscanf(fields, "files=%d dropped=%d restored=%d bytes=%d",
		&s.FilesRestored, &s.EntriesDropped, &s.EntriesRestored, &s.BytesUndone); err != nil {
		return s, fmt.Errorf("lossyfs: crash: bad reply %q: %w", fields, err)
	}
	return s, nil
}

// RequestStatus asks the server of mountpoint what it holds for undo.
func RequestStatus(mountpoint string) (Status, error) {
	fields, err := request(mountpoint, reqStatus, 30*time.Second)
	if err != nil {
		return Status{}, err
	}
	var s Status
	if _, err := fmt.Sscanf(fields, "dirty=%d pages=%d saved=%d", &s.DirtyFiles, &s.SavedPages, &s.SavedBytes); err != nil {
		return s, fmt.Errorf("lossyfs: status: bad reply %q: %w", fields, err)
	}
	return s, nil
}
