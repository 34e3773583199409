package flowtable

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// testdataDir finds the shared test data: ../shared/testdata next to the repository root (the
// directory holding go.mod). CI always has it, so a test that cannot find it fails.
func testdataDir(tb testing.TB) string {
	tb.Helper()
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatalf("finding the working directory: %v", err)
	}
	dir := wd
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatalf("looking for the shared test data: no go.mod in %s or above it", wd)
		}
		dir = parent
	}
	td := filepath.Join(dir, "..", "shared", "testdata")
	if _, err := os.Stat(filepath.Join(td, "pcaps", "zeek")); err != nil {
		tb.Fatalf("shared test data not found at %s (../shared/testdata from the repository root): %v", td, err)
	}
	return td
}

// pcapFiles lists every pcap under pcaps/zeek, sorted.
func pcapFiles(tb testing.TB) []string {
	tb.Helper()
	root := filepath.Join(testdataDir(tb), "pcaps", "zeek")
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) == ".pcap" {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		tb.Fatalf("listing pcaps under %s: %d files, %v", root, len(files), err)
	}
	sort.Strings(files)
	return files
}

// frame is one captured frame and its timestamp.
type frame struct {
	data []byte
	ts   time.Time
}

// readFrames returns every frame of a pcap file (copied).
func readFrames(tb testing.TB, path string) []frame {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("opening %s: %v", path, err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatalf("reading the pcap header of %s: %v", path, err)
	}
	var frames []frame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			tb.Fatalf("reading frame %d of %s: %v", len(frames)+1, path, err)
		}
		frames = append(frames, frame{data, ci.Timestamp})
	}
}
