// Command quanyu-sink-otlp sends records as OpenTelemetry logs, traces and metrics over OTLP.
package main

import (
	"github.com/quanyu/quanyu/plugins/sink-otlp/internal/otlpsink"
	"github.com/quanyu/quanyu/sdk"
)

func main() { sdk.Serve(otlpsink.New()) }
