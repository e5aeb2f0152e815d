package wire

import (
	"bytes"
	"os"
	"testing"

	"github.com/kvtx/kvtx/wire/internal/fastgen"
)

// TestGeneratedCodecIsUpToDate fails when fastcodec_msgs.go is not what the
// generator writes from the current message types: it was edited by hand, or
// a hot type changed without go generate ./wire/.
func TestGeneratedCodecIsUpToDate(t *testing.T) {
	want, err := fastgen.Generate(".")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(fastgen.OutputFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
	i := 0
	for i < len(gl) && i < len(wl) && bytes.Equal(gl[i], wl[i]) {
		i++
	}
	line := func(l [][]byte) []byte {
		if i < len(l) {
			return l[i]
		}
		return []byte("(end of file)")
	}
	t.Errorf("%s is out of date; run go generate ./wire/. First difference, line %d:\n have %s\n want %s",
		fastgen.OutputFile, i+1, line(gl), line(wl))
}
