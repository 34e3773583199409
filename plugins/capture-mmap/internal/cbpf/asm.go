package cbpf

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// This file is a small classic-BPF assembler with symbolic labels.
//
// Classic BPF jumps only forward, and a conditional jump reaches at most 255 instructions. The
// code generator writes jumps to labels without caring how far they are; the assembler lays the
// program out in one pass and, whenever a conditional jump that is still waiting for its target
// would fall out of reach, drops an "island" of unconditional jumps (`ja`, 32-bit reach) into the
// code stream: the waiting conditional jumps are pointed at the island's `ja` for their target,
// and straight-line code hops over the island with one more `ja` (left out when the island
// follows a `ret` or `ja`); for a target that is a `ret`, the island holds a copy of the ret
// rather than a jump to it. This is the textbook "short jump over an unconditional ja", with the
// `ja` shared by every jump to the same target that is in reach, so a chain of hundreds of
// comparisons that all jump to one "hit" label costs a couple of instructions per 250 rather
// than one per comparison. Because every pending jump is resolved before it can go out of reach,
// one pass is enough and no layout iteration is needed.

// Classic BPF opcodes (linux/filter.h). x/net/bpf keeps its constants private; only the ones the
// generator uses are spelled out here.
const (
	opJmp  = 0x05
	opJA   = opJmp | 0x00
	opJEQ  = opJmp | 0x10
	opJGT  = opJmp | 0x20
	opJGE  = opJmp | 0x30
	opJSET = opJmp | 0x40
	opSrcX = 0x08 // operand is X rather than k

	opClassMask = 0x07
	opClassLD   = 0x00
	opClassLDX  = 0x01
	opClassST   = 0x02
	opClassSTX  = 0x03
	opClassRet  = 0x06
	opModeMask  = 0xe0
	opModeMem   = 0x60
)

// MaxInstructions is the kernel's limit on a classic BPF program (BPF_MAXINSNS).
const MaxInstructions = 4096

// maxCondJump is how far a conditional jump reaches: jt and jf are 8-bit skip counts.
const maxCondJump = 255

type label int32

type itemKind uint8

const (
	itemInsn  itemKind = iota // a complete instruction
	itemCond                  // a conditional jump to labels jt, jf
	itemJump                  // an unconditional jump to label jt
	itemLabel                 // a label's position
)

type item struct {
	kind   itemKind
	raw    bpf.RawInstruction
	jt, jf label
}

// asm collects instructions and labels; assemble lays them out.
type asm struct {
	items   []item
	nlabels int
	n       int // instructions emitted (islands not counted)
	// rets maps labels placed on a "ret #k" to k: an island copies the ret rather than jumping
	// to it.
	rets map[label]uint32
	// at holds, after assemble, where each item landed (for a label: the instruction it names);
	// tests use it to check every jump.
	at []int
	// err is the first instruction that would not assemble (a bug in the generator).
	err error
}

// retLabel is a label that the caller will place on a "ret #k".
func (a *asm) retLabel(k uint32) label {
	l := a.newLabel()
	if a.rets == nil {
		a.rets = map[label]uint32{}
	}
	a.rets[l] = k
	return l
}

func (a *asm) newLabel() label {
	a.nlabels++
	return label(a.nlabels)
}

func (a *asm) mark(l label) { a.items = append(a.items, item{kind: itemLabel, jt: l}) }

func (a *asm) insn(i bpf.Instruction) {
	raw, err := i.Assemble()
	if err != nil && a.err == nil {
		a.err = fmt.Errorf("assembling %v: %w", i, err)
	}
	a.items = append(a.items, item{kind: itemInsn, raw: raw})
	a.n++
}

// cond emits "if A <op> k goto jt else goto jf" (op is opJEQ, opJGT, opJGE or opJSET).
func (a *asm) cond(op uint16, k uint32, jt, jf label) {
	if jt == jf {
		a.ja(jt)
		return
	}
	a.items = append(a.items, item{kind: itemCond, raw: bpf.RawInstruction{Op: op, K: k}, jt: jt, jf: jf})
	a.n++
}

// condX is cond with X as the operand.
func (a *asm) condX(op uint16, jt, jf label) {
	a.items = append(a.items, item{kind: itemCond, raw: bpf.RawInstruction{Op: op | opSrcX}, jt: jt, jf: jf})
	a.n++
}

func (a *asm) ja(l label) {
	a.items = append(a.items, item{kind: itemJump, raw: bpf.RawInstruction{Op: opJA}, jt: l})
	a.n++
}

// Shorthands for the instructions the generator uses most.
func (a *asm) ldMem(slot int)    { a.insn(bpf.LoadScratch{Dst: bpf.RegA, N: slot}) }
func (a *asm) ldxMem(slot int)   { a.insn(bpf.LoadScratch{Dst: bpf.RegX, N: slot}) }
func (a *asm) stMem(slot int)    { a.insn(bpf.StoreScratch{Src: bpf.RegA, N: slot}) }
func (a *asm) ldConst(v uint32)  { a.insn(bpf.LoadConstant{Dst: bpf.RegA, Val: v}) }
func (a *asm) ldxConst(v uint32) { a.insn(bpf.LoadConstant{Dst: bpf.RegX, Val: v}) }
func (a *asm) ldInd(off uint32, size int) {
	a.insn(bpf.LoadIndirect{Off: off, Size: size})
}
func (a *asm) ldLen()                     { a.insn(bpf.LoadExtension{Num: bpf.ExtLen}) }
func (a *asm) alu(op bpf.ALUOp, v uint32) { a.insn(bpf.ALUOpConstant{Op: op, Val: v}) }
func (a *asm) aluX(op bpf.ALUOp)          { a.insn(bpf.ALUOpX{Op: op}) }
func (a *asm) tax()                       { a.insn(bpf.TAX{}) }
func (a *asm) txa()                       { a.insn(bpf.TXA{}) }
func (a *asm) ret(v uint32)               { a.insn(bpf.RetConstant{Val: v}) }
func (a *asm) jeq(k uint32, jt, jf label) { a.cond(opJEQ, k, jt, jf) }
func (a *asm) jge(k uint32, jt, jf label) { a.cond(opJGE, k, jt, jf) }
func (a *asm) jgt(k uint32, jt, jf label) { a.cond(opJGT, k, jt, jf) }
func (a *asm) jgeX(jt, jf label)          { a.condX(opJGE, jt, jf) }

// jeqAny jumps to jt if A equals any of ks, else to jf.
func (a *asm) jeqAny(ks []uint32, jt, jf label) {
	for i, k := range ks {
		if i == len(ks)-1 {
			a.jeq(k, jt, jf)
			return
		}
		next := a.newLabel()
		a.jeq(k, jt, next)
		a.mark(next)
	}
	a.ja(jf)
}

type fixup struct {
	pos    int
	target label
	cond   bool
	jf     bool // for a conditional jump: the false branch rather than the true one
	done   bool
}

// assemble lays the program out, inserting jump islands where conditional jumps would not reach.
func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	if a.err != nil {
		return nil, a.err
	}
	out := make([]bpf.RawInstruction, 0, a.n+a.n/64+8)
	defined := make([]bool, a.nlabels+1)
	a.at = make([]int, len(a.items))

	// Jumps whose target is not placed yet: all of them by label, and the conditional ones also
	// in order of position (oldest first, resolved ones skipped lazily) with, per label, how
	// many wait for it.
	var fixups []fixup
	byLabel := make([][]int, a.nlabels+1)
	var condOrder []int
	condHead := 0
	condWaiting := make([]int, a.nlabels+1)
	var condTargets []label // labels with condWaiting > 0, in first-use order (lazily pruned)
	numTargets := 0
	// labelAtEnd is set while a label points just past the last instruction: an island placed
	// there must start with a hop, or the label would land in it.
	labelAtEnd := false

	addFixup := func(f fixup) {
		fixups = append(fixups, f)
		i := len(fixups) - 1
		byLabel[f.target] = append(byLabel[f.target], i)
		if f.cond {
			condOrder = append(condOrder, i)
			if condWaiting[f.target] == 0 {
				numTargets++
				condTargets = append(condTargets, f.target)
			}
			condWaiting[f.target]++
		}
	}
	resolve := func(i, at int) {
		f := &fixups[i]
		if f.done {
			return
		}
		f.done = true
		off := at - f.pos - 1
		switch {
		case !f.cond:
			out[f.pos].K = uint32(off)
			return
		case f.jf:
			out[f.pos].Jf = uint8(off)
		default:
			out[f.pos].Jt = uint8(off)
		}
		if condWaiting[f.target]--; condWaiting[f.target] == 0 {
			numTargets--
		}
	}
	oldestCond := func() int {
		for condHead < len(condOrder) && fixups[condOrder[condHead]].done {
			condHead++
		}
		if condHead == len(condOrder) {
			return -1
		}
		return fixups[condOrder[condHead]].pos
	}
	// island places a `ja` (or a copy of the ret) for every target a pending conditional jump
	// waits for and points those jumps at it.
	island := func() {
		var targets []label
		for _, t := range condTargets {
			if condWaiting[t] > 0 {
				targets = append(targets, t)
			}
		}
		condTargets = condTargets[:0]
		if len(targets) == 0 {
			return
		}
		if n := len(out); n > 0 && (labelAtEnd || !unconditional(out[n-1])) {
			out = append(out, bpf.RawInstruction{Op: opJA, K: uint32(len(targets))})
		}
		for _, t := range targets {
			entry := len(out)
			if k, ok := a.rets[t]; ok {
				out = append(out, bpf.RawInstruction{Op: opClassRet, K: k})
			} else {
				out = append(out, bpf.RawInstruction{Op: opJA})
			}
			for _, i := range byLabel[t] {
				if fixups[i].cond {
					resolve(i, entry)
				}
			}
			if _, ok := a.rets[t]; !ok {
				addFixup(fixup{pos: entry, target: t})
			}
		}
		labelAtEnd = false
	}
	// islandDue reports whether an island must be placed before the next instruction: if it were
	// placed one instruction later (which may add two more targets), the oldest pending jump
	// would no longer reach it. An island right after a ret or ja costs no hop, so one is placed
	// there early once the oldest pending jump is halfway out of reach.
	islandDue := func() bool {
		oldest := oldestCond()
		if oldest < 0 {
			return false
		}
		cur := len(out)
		if cur+numTargets+2-oldest > maxCondJump {
			return true
		}
		return cur > 0 && !labelAtEnd && unconditional(out[cur-1]) && cur-oldest > maxCondJump/2
	}

	for idx, it := range a.items {
		if islandDue() {
			island()
		}
		a.at[idx] = len(out)
		if it.kind == itemLabel {
			if defined[it.jt] {
				return nil, fmt.Errorf("label %d placed twice", it.jt)
			}
			defined[it.jt] = true
			for _, i := range byLabel[it.jt] {
				resolve(i, len(out))
			}
			byLabel[it.jt] = nil
			labelAtEnd = true
			continue
		}
		labelAtEnd = false
		pos := len(out)
		out = append(out, it.raw)
		switch it.kind {
		case itemJump:
			if defined[it.jt] {
				return nil, fmt.Errorf("instruction %d jumps backwards", pos)
			}
			addFixup(fixup{pos: pos, target: it.jt})
		case itemCond:
			if defined[it.jt] || defined[it.jf] {
				return nil, fmt.Errorf("instruction %d jumps backwards", pos)
			}
			addFixup(fixup{pos: pos, target: it.jt, cond: true})
			addFixup(fixup{pos: pos, target: it.jf, cond: true, jf: true})
		}
	}
	for i := range fixups {
		if !fixups[i].done {
			return nil, fmt.Errorf("instruction %d jumps to label %d, which is never placed", fixups[i].pos, fixups[i].target)
		}
	}
	return out, nil
}

func unconditional(ri bpf.RawInstruction) bool {
	return ri.Op == opJA || ri.Op&opClassMask == opClassRet
}

// verify checks a program the way the kernel's classic BPF checker (bpf_check_classic) does for
// what this package emits: length, jumps forward and inside the program, a ret at the end, and
// no scratch slot read on a path where it was not written first. A program that fails here
// would be refused by SO_ATTACH_FILTER, so Compile never returns one.
func verify(prog []bpf.RawInstruction, limit int) error {
	n := len(prog)
	if n == 0 || n > limit {
		return fmt.Errorf("program has %d instructions, want 1 to %d", n, limit)
	}
	if prog[n-1].Op&opClassMask != opClassRet {
		return fmt.Errorf("program does not end with ret")
	}
	masks := make([]uint16, n)
	for i := range masks {
		masks[i] = 0xffff
	}
	var valid uint16
	for pc, ri := range prog {
		valid &= masks[pc]
		switch {
		case ri.Op == opJA:
			if int(ri.K) >= n-pc-1 {
				return fmt.Errorf("instruction %d jumps past the end", pc)
			}
			masks[pc+1+int(ri.K)] &= valid
			valid = 0xffff
		case ri.Op&opClassMask == opJmp&opClassMask:
			if pc+int(ri.Jt)+1 >= n || pc+int(ri.Jf)+1 >= n {
				return fmt.Errorf("instruction %d jumps past the end", pc)
			}
			masks[pc+1+int(ri.Jt)] &= valid
			masks[pc+1+int(ri.Jf)] &= valid
			valid = 0xffff
		case ri.Op == opClassST || ri.Op == opClassSTX:
			if ri.K > 15 {
				return fmt.Errorf("instruction %d stores to scratch slot %d", pc, ri.K)
			}
			valid |= 1 << ri.K
		case (ri.Op&opClassMask == opClassLD || ri.Op&opClassMask == opClassLDX) && ri.Op&opModeMask == opModeMem:
			if ri.K > 15 || valid&(1<<ri.K) == 0 {
				return fmt.Errorf("instruction %d reads scratch slot %d before it is written", pc, ri.K)
			}
		}
	}
	return nil
}
