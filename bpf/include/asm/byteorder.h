// See types.h: the programs are built little-endian (bpfel) only.
#pragma once
#include <linux/byteorder/little_endian.h>
