package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testbin"
	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// labOwners are the lab's applications and their owners, as `quanyu lab` writes them into mix.
var labOwners = map[string]string{"web": "Storefront team", "api": "Orders team", "db": "Data team",
	"cache": "Platform team", "dns": "Network team", "client": "Load generator"}

// labEdges are the calls the lab's services make: client → web → api → db and cache.
var labEdges = [][2]string{{"client", "web"}, {"web", "api"}, {"api", "db"}, {"api", "cache"}}

// Acceptance (demo 1): `quanyu up --lab` in the background; within 60 s the API shows every lab
// application with its owner and the expected edges; the UI renders them in headless Chromium
// (the screenshot is kept under test-artifacts/); stopping with Ctrl-C leaves no namespace,
// link, bridge, BPF program or link, or process of ours behind.
func TestUpLab(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Fatalf("bpftool is needed to look at the kernel's programs: %v", err)
	}
	// A prefix and a range of this test's own, so a real lab on the machine is not touched.
	prefix := fmt.Sprintf("qyu%04d", rand.IntN(10000))
	ui, stateDir := freePort(t), t.TempDir()
	cmd := quanyu(t, "up", "--lab", "--lab-prefix", prefix, "--lab-cidr", fmt.Sprintf("10.179.%d.0/24", rand.IntN(250)),
		"--state-dir", stateDir, "--ui", ui, "--mix-listen", freePort(t), "--mix-http", freePort(t),
		"--otlp-grpc", freePort(t), "--otlp-http", freePort(t))
	binDir := filepath.Dir(cmd.Path)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
			}
			_ = exec.Command(filepath.Join(binDir, "quanyu"), "lab", "down", "--prefix", prefix).Run()
		}
		if t.Failed() {
			t.Logf("quanyu up said:\n%s", out.String())
		}
	})
	waitUntil(t, 60*time.Second, "quanyu up to say it is up", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("quanyu up exited (%v):\n%s", err, out.String())
		default:
		}
		return strings.Contains(out.String(), "Quanyu is up.")
	})
	for _, want := range []string{"UI        http://" + ui + "/", "Stop: Ctrl-C", "lab       6 hosts"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the banner lacks %q:\n%s", want, out.String())
		}
	}
	// The eBPF capture (this kernel has BPF and TCX) holds its programs and links once attached.
	var progs, links []string
	waitUntil(t, 20*time.Second, "the eBPF capture plugin to attach", func() bool {
		if plugin := pluginPID(t, cmd.Process.Pid, "quanyu-capture-ebpf"); plugin != 0 {
			progs, links = bpfObjects(t, plugin)
		}
		return len(progs) > 0 && len(links) > 0
	})

	// The API shows every application with its owner, and the calls between them.
	a := &analysisProc{api: ui}
	var g graphJSON
	waitUntil(t, 60*time.Second-time.Since(began), "the lab's map in the API", func() bool {
		g = a.graph(t)
		owners := map[string]string{}
		for _, n := range g.Nodes {
			owners[n.App] = n.Owner
		}
		for app, owner := range labOwners {
			if owners[app] != owner {
				return false
			}
		}
		for _, e := range labEdges {
			if _, ok := g.edge(e[0], e[1]); !ok {
				return false
			}
		}
		// Name lookups go to the lab's DNS server.
		for _, e := range g.Edges {
			if e.Target == "app:dns" && e.Port == 53 {
				return true
			}
		}
		return false
	})
	t.Logf("the lab's map was complete in the API %s after start", time.Since(began).Round(time.Second))

	expect, _ := json.Marshal(map[string]any{"apps": labOwners, "edges": labEdges})
	testbin.RunUIScript(t, "demo.mjs", map[string]string{
		"QUANYU_UI_URL":         "http://" + ui + "/",
		"QUANYU_UI_EXPECT":      string(expect),
		"QUANYU_UI_SCREENSHOTS": testbin.UIArtifacts(t, t.Name()),
	}, 2*time.Minute)

	// Ctrl-C stops everything, and nothing of ours is left.
	stopped = true
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("quanyu up exited with %v:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("quanyu up did not stop within 60 s of Ctrl-C:\n%s", out.String())
	}
	for _, want := range []string{"Stopped:", "The lab is down."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("on stopping it did not say %q:\n%s", want, out.String())
		}
	}
	if ns, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(ns), prefix) {
		t.Errorf("namespaces left:\n%s", ns)
	}
	if links, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(links), prefix) {
		t.Errorf("links left:\n%s", links)
	}
	for what, ids := range map[string][]string{"prog": progs, "link": links} {
		shown := liveIDs(t, what)
		for _, id := range ids {
			if shown[id] {
				t.Errorf("BPF %s %s is still loaded", what, id)
			}
		}
	}
	if left := processesOf(binDir, prefix); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}

	// The lab's applications left mix's catalog with the lab; mix's data (here the default
	// subscription) stays in the state directory.
	m := &mixProc{addr: freePort(t), cfg: filepath.Join(t.TempDir(), "mix.yaml")}
	if err := writeFile(m.cfg, fmt.Sprintf("listen: %s\nhttp_listen: \"\"\ndata_dir: %s\n", m.addr, filepath.Join(stateDir, "mix"))); err != nil {
		t.Fatal(err)
	}
	m.start(t)
	conn, err := mix.Dial(mix.DialOptions{Address: m.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := mixpb.NewMixClient(conn)
	for kind, want := range map[string]int{"catalog": 0, "subscription": 1} {
		list, err := client.List(context.Background(), &mixpb.ListRequest{Kind: kind})
		if err != nil {
			t.Fatalf("listing mix's %s after the stop: %v", kind, err)
		}
		if len(list.Objects) != want {
			t.Errorf("mix holds %d %s objects after the stop, want %d: %v", len(list.Objects), kind, want, list.Objects)
		}
	}
}

// processesOf lists the running processes whose executable is in dir (quanyu and its plugins)
// or whose command line names the lab's prefix.
func processesOf(dir, prefix string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	self := os.Getpid()
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == self {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasPrefix(exe, dir+"/") || strings.Contains(string(cmdline), prefix) {
			out = append(out, fmt.Sprintf("%d %s %q", pid, exe, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return out
}

// Without root or the capture capabilities, quanyu up says what is missing and how to fix it,
// and exits, rather than running an agent that sees nothing.
func TestUpRefusesWithoutCapabilities(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) withholds the capabilities: %v", err)
	}
	// The state directory is never made: the check comes first.
	dir := filepath.Join(t.TempDir(), "state")
	q := quanyu(t)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", q.Path, "up", "--state-dir", dir, "--ui", freePort(t),
		"--mix-listen", freePort(t), "--mix-http", freePort(t), "--otlp-grpc", freePort(t), "--otlp-http", freePort(t))
	cmd.Env = q.Env
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("quanyu up ran without any capability:\n%s", out)
	}
	for _, want := range []string{"no capture backend can run", "CAP_BPF: missing", "CAP_NET_RAW: missing",
		"Run it as root (sudo), or grant the capture plugins CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_NET_RAW"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quanyu up did not say %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the state directory was made (%v)", err)
	}
}
