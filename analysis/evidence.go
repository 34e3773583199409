package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/quanyu/quanyu/sdk"
)

// mixSubscriber asks mix, through its HTTP admin API, to push a subscription: the evidence a
// firing alert asks for. It needs mix.http_address and an admin token (mix.admin_token).
type mixSubscriber struct {
	address, token string
	client         *http.Client
}

func (m *mixSubscriber) Subscribe(ctx context.Context, sub sdk.Subscription) error {
	body, err := json.Marshal(sub)
	if err != nil {
		return fmt.Errorf("encoding subscription %q: %w", sub.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.address+"/api/v1/subscriptions", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if m.token != "" {
		req.Header.Set("Authorization", "Bearer "+m.token)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting subscription %q to mix at %s: %w", sub.ID, m.address, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mix refused subscription %q: %s: %s", sub.ID, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}
