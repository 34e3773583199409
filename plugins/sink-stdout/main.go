// Command quanyu-sink-stdout prints records as JSON Lines (or the seed's message format).
package main

import (
	"github.com/quanyu/quanyu/plugins/sink-stdout/internal/stdout"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(stdout.New()) }
