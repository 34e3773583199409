// See types.h: the BPF target is 64-bit.
#pragma once
#include <asm-generic/bitsperlong.h>
