// Command quanyu-capture-ebpf is the eBPF capture plugin: a TC/TCX program filters and aggregates
// packets in the kernel, and this process reports the flows it counted.
package main

import (
	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/capture"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(capture.New()) }
