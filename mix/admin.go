package mix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/internal/store"
	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// admin is the operations an operator has, whatever the transport (gRPC or HTTP/JSON): every
// document is validated by its kind's parser before anything is stored, so a bad request changes
// nothing, and every change is a revision authored by the principal.
type admin struct {
	store store.Store
	hub   *hub
	log   *slog.Logger
}

func (a *admin) apply(ctx context.Context, p principal, kindName string, data []byte) ([]*mixpb.Applied, error) {
	k, err := kindByName(kindName)
	if err != nil {
		return nil, err
	}
	objs, err := k.parse(data)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%w: the document holds no %s", errInvalid, k.plural)
	}
	before := map[string]int64{}
	existing, err := a.store.List(ctx, k.name)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", k.plural, err)
	}
	for _, o := range existing {
		before[o.ID] = o.Revision
	}
	batch := make(map[string]json.RawMessage, len(objs))
	for _, o := range objs {
		batch[o.id] = o.body
	}
	if k.whole != nil {
		all := make([]json.RawMessage, 0, len(existing)+len(objs))
		for _, o := range existing {
			if _, replaced := batch[o.ID]; !replaced {
				all = append(all, o.Body)
			}
		}
		for _, o := range objs {
			all = append(all, o.body)
		}
		if err := k.whole(all); err != nil {
			return nil, fmt.Errorf("with the %s already stored: %w", k.plural, err)
		}
	}
	revs, err := a.store.ApplyAll(ctx, k.name, batch, p.Name)
	if err != nil {
		return nil, fmt.Errorf("storing %s: %w", k.plural, err)
	}
	out := make([]*mixpb.Applied, 0, len(objs))
	changed := false
	for _, o := range objs {
		rev := revs[o.id]
		c := rev != before[o.id]
		changed = changed || c
		out = append(out, &mixpb.Applied{Id: o.id, Revision: rev, Changed: c})
	}
	if changed {
		a.log.Info("applied", "kind", k.name, "objects", len(objs), "author", p.Name)
		a.hub.changed(k)
	}
	return out, nil
}

func (a *admin) delete(ctx context.Context, p principal, kindName, id string) (int64, error) {
	k, err := kindByName(kindName)
	if err != nil {
		return 0, err
	}
	rev, err := a.store.Delete(ctx, k.name, id, p.Name)
	if err != nil {
		return 0, err
	}
	a.log.Info("deleted", "kind", k.name, "id", id, "author", p.Name)
	a.hub.changed(k)
	return rev, nil
}

func objectPB(o store.Object) *mixpb.Object {
	return &mixpb.Object{Kind: string(o.Kind), Id: o.ID, Json: o.Body, Revision: o.Revision,
		UpdatedUnixNs: o.Updated.UnixNano(), Author: o.Author}
}

// redact hides what only admins may read: a receiver's header values and URL password (they
// carry credentials for the alert's destination).
func redact(p principal, o *mixpb.Object) *mixpb.Object {
	if p.Role == RoleAdmin || o.Kind != "receiver" {
		return o
	}
	r, err := api.ParseReceiver(o.Json)
	if err != nil {
		o.Json = []byte(`{}`)
		return o
	}
	for k := range r.Headers {
		r.Headers[k] = "<redacted>"
	}
	if u, err := url.Parse(r.URL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "redacted")
			r.URL = u.String()
		}
	}
	if raw, err := json.Marshal(r); err == nil {
		o.Json = raw
	}
	return o
}

func (a *admin) get(ctx context.Context, p principal, kindName, id string) (*mixpb.Object, error) {
	k, err := kindByName(kindName)
	if err != nil {
		return nil, err
	}
	o, err := a.store.Get(ctx, k.name, id)
	if err != nil {
		return nil, err
	}
	return redact(p, objectPB(o)), nil
}

func (a *admin) list(ctx context.Context, p principal, kindName string) ([]*mixpb.Object, error) {
	k, err := kindByName(kindName)
	if err != nil {
		return nil, err
	}
	objs, err := a.store.List(ctx, k.name)
	if err != nil {
		return nil, err
	}
	out := make([]*mixpb.Object, len(objs))
	for i, o := range objs {
		out[i] = redact(p, objectPB(o))
	}
	return out, nil
}

func (a *admin) history(ctx context.Context, kindName, id string, limit int) ([]*mixpb.Revision, error) {
	k, err := kindByName(kindName)
	if err != nil {
		return nil, err
	}
	revs, err := a.store.History(ctx, k.name, id, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*mixpb.Revision, len(revs))
	for i, r := range revs {
		out[i] = &mixpb.Revision{Number: r.Number, TimeUnixNs: r.Time.UnixNano(), Author: r.Author, Kind: string(r.Kind),
			Id: r.ID, Action: r.Action, Json: r.Body, BeforeJson: r.Before}
	}
	return out, nil
}

// grpcError maps an operation's error onto a gRPC status: a bad request names its fields.
func grpcError(err error) error {
	var ve *sdk.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve), errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// grpcService serves the Mix service.
type grpcService struct {
	mixpb.UnimplementedMixServer
	admin *admin
	hub   *hub
}

func (g *grpcService) Watch(stream mixpb.Mix_WatchServer) error { return g.hub.watch(stream) }

func (g *grpcService) Apply(ctx context.Context, req *mixpb.ApplyRequest) (*mixpb.ApplyResponse, error) {
	applied, err := g.admin.apply(ctx, principalOf(ctx), req.Kind, req.Json)
	if err != nil {
		return nil, grpcError(err)
	}
	return &mixpb.ApplyResponse{Applied: applied}, nil
}

func (g *grpcService) Get(ctx context.Context, req *mixpb.GetRequest) (*mixpb.Object, error) {
	o, err := g.admin.get(ctx, principalOf(ctx), req.Kind, req.Id)
	return o, grpcError(err)
}

func (g *grpcService) List(ctx context.Context, req *mixpb.ListRequest) (*mixpb.ListResponse, error) {
	objs, err := g.admin.list(ctx, principalOf(ctx), req.Kind)
	if err != nil {
		return nil, grpcError(err)
	}
	return &mixpb.ListResponse{Objects: objs}, nil
}

func (g *grpcService) Delete(ctx context.Context, req *mixpb.DeleteRequest) (*mixpb.DeleteResponse, error) {
	rev, err := g.admin.delete(ctx, principalOf(ctx), req.Kind, req.Id)
	if err != nil {
		return nil, grpcError(err)
	}
	return &mixpb.DeleteResponse{Revision: rev}, nil
}

func (g *grpcService) History(ctx context.Context, req *mixpb.HistoryRequest) (*mixpb.HistoryResponse, error) {
	revs, err := g.admin.history(ctx, req.Kind, req.Id, int(req.Limit))
	if err != nil {
		return nil, grpcError(err)
	}
	return &mixpb.HistoryResponse{Revisions: revs}, nil
}

func (g *grpcService) Agents(context.Context, *mixpb.AgentsRequest) (*mixpb.AgentsResponse, error) {
	return &mixpb.AgentsResponse{Agents: g.hub.agents()}, nil
}
