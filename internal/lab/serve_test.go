package lab

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWatchParent(t *testing.T) {
	var ppid atomic.Int64
	ppid.Store(42)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchParent(ctx, cancel, 42, time.Millisecond, func() int { return int(ppid.Load()) })
	}()
	time.Sleep(20 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("stopped while the parent is there")
	}
	ppid.Store(1) // reparented to init
	<-done
	if !errors.Is(context.Cause(ctx), errParentGone) {
		t.Errorf("cause %v, want errParentGone", context.Cause(ctx))
	}
}

func TestServeRefusesBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "which service"},
		{[]string{"--rate", "3"}, "which service"},
		{[]string{"mail"}, `no service "mail"`},
		{[]string{"web", "--error-ratio", "2"}, "--error-ratio"},
		{[]string{"client", "--rate", "0"}, "--rate"},
		{[]string{"dns", "--record", "web"}, "--record"},
		{[]string{"db", "extra"}, "unexpected argument"},
	} {
		var stderr bytes.Buffer
		err := Serve(context.Background(), tc.args, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Serve(%q): %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}
