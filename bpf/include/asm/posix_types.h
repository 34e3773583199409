// See types.h: the generic definitions serve the BPF target.
#pragma once
#include <asm-generic/posix_types.h>
