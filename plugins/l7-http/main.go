// Command quanyu-l7-http is the agent's HTTP/1.0 and HTTP/1.1 decoder plugin: it reads the
// payload samples of the flows routed to it and reports one L7 record per request and response.
package main

import (
	"github.com/quanyu/quanyu/plugins/l7-http/internal/decoder"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(decoder.New()) }
