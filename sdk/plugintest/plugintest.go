// Package plugintest runs a plugin in-process behind the real go-plugin gRPC transport, so a
// plugin's tests exercise exactly the conversions and error mapping the agent will see, without
// building a binary.
package plugintest

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/quanyu/quanyu/sdk"
)

// Capture serves impl over an in-process gRPC connection and returns the host's client for it.
func Capture(t testing.TB, impl sdk.Capture) sdk.Capture {
	return dispense[sdk.Capture](t, impl, sdk.KindCapture)
}

// Decoder serves impl over an in-process gRPC connection and returns the host's client for it.
func Decoder(t testing.TB, impl sdk.Decoder) sdk.Decoder {
	return dispense[sdk.Decoder](t, impl, sdk.KindDecoder)
}

// Sink serves impl over an in-process gRPC connection and returns the host's client for it.
func Sink(t testing.TB, impl sdk.Sink) sdk.Sink {
	return dispense[sdk.Sink](t, impl, sdk.KindSink)
}

func dispense[T any](t testing.TB, impl any, kind sdk.Kind) T {
	t.Helper()
	set, err := sdk.NewPluginSet(impl)
	if err != nil {
		t.Fatalf("serving %T: %v", impl, err)
	}
	client, server := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin(set))
	// Closing the client asks the server to stop (go-plugin's controller Shutdown); stopping the
	// server here as well would race with that inside go-plugin.
	_ = server
	t.Cleanup(func() { _ = client.Close() })
	raw, err := client.Dispense(string(kind))
	if err != nil {
		t.Fatalf("dispensing %s: %v", kind, err)
	}
	v, ok := raw.(T)
	if !ok {
		t.Fatalf("dispensed %T, not a %s plugin", raw, kind)
	}
	return v
}
