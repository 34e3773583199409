package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	labs "github.com/quanyu/quanyu/internal/lab"
)

// upLab is the lab as `quanyu up --lab` uses it: brought up with the lab's defaults, its services
// tied to this process (not detached), taken down when up stops.
type upLab struct {
	l          *labs.Lab
	interfaces []string
	catalog    []byte
	summary    string
}

func startUpLab(ctx context.Context, log *slog.Logger, o upOptions) (*upLab, error) {
	opts := labs.Options{Log: log, ClientRate: o.labRate, Prefix: o.labPrefix}
	if o.labCIDR != "" {
		p, err := netip.ParsePrefix(o.labCIDR)
		if err != nil {
			return nil, fmt.Errorf("--lab-cidr %q: %w", o.labCIDR, err)
		}
		opts.CIDR = p
	}
	// A lab left by an earlier run that did not stop cleanly is removed first, so up starts
	// from a known state.
	if removed, err := labs.Down(ctx, opts); err != nil {
		return nil, fmt.Errorf("removing an earlier lab: %w", err)
	} else if len(removed) > 0 {
		log.Info("removed what an earlier lab left", "items", removed)
	}
	l, err := labs.Up(ctx, opts)
	if err != nil {
		return nil, err
	}
	cat, err := l.CatalogJSON()
	if err != nil {
		_ = l.Down(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("encoding the lab's catalog: %w", err)
	}
	return &upLab{l: l, interfaces: l.Interfaces(), catalog: cat, summary: l.String()}, nil
}

func (u *upLab) down(ctx context.Context) error { return u.l.Down(ctx) }
