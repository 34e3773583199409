package kern

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// The committed object passes this kernel's verifier.
func TestProgramLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading BPF programs needs root (CI runs as root)")
	}
	var objs CaptureObjects
	err := LoadCaptureObjects(&objs, nil)
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		t.Fatalf("verifier: %+v", ve)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	info, err := objs.QuanyuCapture.Info()
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := info.VerifiedInstructions(); ok {
		t.Logf("%d instructions verified", n)
	}
}
