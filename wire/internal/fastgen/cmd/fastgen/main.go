// Command fastgen writes fastcodec_msgs.go into the wire package in the
// current directory, where go generate runs it; see package fastgen.
package main

import (
	"fmt"
	"os"

	"github.com/kvtx/kvtx/wire/internal/fastgen"
)

func main() {
	src, err := fastgen.Generate(".")
	if err == nil {
		err = os.WriteFile(fastgen.OutputFile, src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
