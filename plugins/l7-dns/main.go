// Command quanyu-l7-dns is the DNS decoder plugin: it turns payload samples of DNS flows, over
// UDP and TCP, into one L7 record per query and response.
package main

import (
	"github.com/quanyu/quanyu/plugins/l7-dns/internal/decoder"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(decoder.New()) }
