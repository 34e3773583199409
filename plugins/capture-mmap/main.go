// Command quanyu-capture-mmap is the AF_PACKET capture plugin: a TPACKET_V3 ring per interface
// with a classic BPF filter compiled from the subscriptions; it also replays pcap/pcapng files.
package main

import (
	"github.com/quanyu/quanyu/plugins/capture-mmap/internal/capture"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(capture.New()) }
