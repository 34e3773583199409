// The kernel's UAPI headers include <asm/types.h>, which lives in an architecture's directory;
// a BPF program is built for the BPF target, whose types are the generic 64-bit ones.
#pragma once
#include <asm-generic/int-ll64.h>
