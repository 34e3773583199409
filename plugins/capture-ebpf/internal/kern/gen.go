// Package kern is the kernel program of the eBPF capture as Go sees it: the compiled object
// (bpf2go output, committed so that building needs no clang) and the layout types of bpf/flow.h.
// `make generate` rebuilds it from bpf/capture.c with clang.
package kern

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package kern -output-stem capture -type flow_key -type flow_stats -type filter_set -type capture_config -type lpm_v4_key -type lpm_v6_key -type nic_key -type l7_state -type event_header -type frame_event -type sample_event -type counter -type event_kind Capture ../../../../bpf/capture.c -- -I../../../../bpf -I../../../../bpf/include
