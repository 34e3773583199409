package cbpf

import (
	"testing"

	"golang.org/x/net/bpf"

	"github.com/quanyu/quanyu/internal/testframes"
)

// TestAssemblerLongJumps assembles random programs whose conditional jumps reach far past 255
// instructions and checks that the laid-out program computes what the symbolic one does.
func TestAssemblerLongJumps(t *testing.T) {
	seed := testSeed(t)
	g := testframes.NewGen(seed)
	for round := range 30 {
		n := g.N(100, 3000)
		// Labels at random positions; every jump goes to a label after it.
		nlabels := testframes.Pick(g, []int{2, 3, 5, g.N(2, 40)})
		type sym struct {
			kind   int // 0 ld, 1 cond, 2 ja, 3 ret
			k      uint32
			op     uint16
			jt, jf int // label indices
		}
		var a asm
		labels := make([]label, nlabels)
		pos := make([]int, nlabels)
		for i := range labels {
			labels[i] = a.newLabel()
			pos[i] = g.N(1, n)
		}
		after := func(i int) int {
			var cands []int
			for l, p := range pos {
				if p > i {
					cands = append(cands, l)
				}
			}
			if len(cands) == 0 {
				return -1
			}
			return testframes.Pick(g, cands)
		}
		// Few rets and jas: islands then have to be forced in straight-line code rather than
		// placed for free after an unconditional instruction.
		uncond := testframes.Pick(g, []float64{0.001, 0.01, 0.1})
		prog := make([]sym, n)
		for i := range prog {
			switch x := g.R.Float64(); {
			case x < 0.3:
				prog[i] = sym{kind: 0, k: uint32(g.R.IntN(8))}
			case x < 1-uncond:
				jt, jf := after(i), -1 // -1: fall through
				if jt < 0 {
					prog[i] = sym{kind: 3, k: uint32(1000 + i)}
					continue
				}
				if other := after(i); other != jt && g.P(0.3) {
					jf = other
				}
				prog[i] = sym{kind: 1, op: testframes.Pick(g, []uint16{opJEQ, opJGT, opJGE}), k: uint32(g.R.IntN(8)), jt: jt, jf: jf}
			case x < 1-uncond/2:
				if l := after(i); l >= 0 {
					prog[i] = sym{kind: 2, jt: l}
					continue
				}
				fallthrough
			default:
				prog[i] = sym{kind: 3, k: uint32(1000 + i)}
			}
		}
		for i := 0; i <= n; i++ {
			for l, p := range pos {
				if p == i {
					a.mark(labels[l])
				}
			}
			if i == n {
				a.ret(7)
				break
			}
			s := prog[i]
			switch s.kind {
			case 0:
				a.insn(bpf.LoadAbsolute{Off: s.k, Size: 1})
			case 1:
				if s.jf < 0 {
					next := a.newLabel()
					a.cond(s.op, s.k, labels[s.jt], next)
					a.mark(next)
					continue
				}
				a.cond(s.op, s.k, labels[s.jt], labels[s.jf])
			case 2:
				a.ja(labels[s.jt])
			case 3:
				a.ret(s.k)
			}
		}
		insns, err := a.assemble()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}

		if err := verify(insns, 1<<20); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		checkJumps(t, &a, insns)
		vm := newVM(t, Program{Instructions: insns})
		// The symbolic program, run directly.
		run := func(pkt []byte) uint32 {
			var acc uint32
			i := 0
			for i < n {
				s := prog[i]
				switch s.kind {
				case 0:
					acc = uint32(pkt[s.k])
					i++
				case 1:
					ok := map[uint16]bool{opJEQ: acc == s.k, opJGT: acc > s.k, opJGE: acc >= s.k}[s.op]
					switch {
					case ok:
						i = pos[s.jt]
					case s.jf < 0:
						i++
					default:
						i = pos[s.jf]
					}
				case 2:
					i = pos[s.jt]
				case 3:
					return s.k
				}
			}
			return 7
		}
		for range 200 {
			pkt := make([]byte, 8)
			for j := range pkt {
				pkt[j] = byte(g.R.IntN(8))
			}
			if got, want := runVM(t, vm, pkt), run(pkt); got != want {
				t.Fatalf("round %d (%d symbolic, %d laid out): packet %x returns %d, want %d", round, n, len(insns), pkt, got, want)
			}
		}
	}
}

// checkJumps follows every jump of the laid-out program through any islands and checks that it
// ends where its label is (or at a copy of the ret the label names).
func checkJumps(t *testing.T, a *asm, insns []bpf.RawInstruction) {
	t.Helper()
	labelAt := map[label]int{}
	for idx, it := range a.items {
		if it.kind == itemLabel {
			labelAt[it.jt] = a.at[idx]
		}
	}
	// land follows unconditional jumps to the first other instruction.
	land := func(pc int) int {
		for insns[pc].Op == opJA {
			pc += 1 + int(insns[pc].K)
		}
		return pc
	}
	same := func(x, y int) bool {
		x, y = land(x), land(y)
		return x == y || insns[x].Op&opClassMask == opClassRet && insns[x] == insns[y]
	}
	for idx, it := range a.items {
		pc := a.at[idx]
		switch it.kind {
		case itemCond:
			if !same(pc+1+int(insns[pc].Jt), labelAt[it.jt]) || !same(pc+1+int(insns[pc].Jf), labelAt[it.jf]) {
				t.Fatalf("the conditional jump at %d does not reach its labels (at %d and %d)", pc, labelAt[it.jt], labelAt[it.jf])
			}
		case itemJump:
			if !same(pc, labelAt[it.jt]) {
				t.Fatalf("the jump at %d does not reach its label at %d", pc, labelAt[it.jt])
			}
		}
	}
}
