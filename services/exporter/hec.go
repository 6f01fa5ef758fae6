package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// HEC delivers to an HTTP event collector compatible with Splunk HEC
// (POST <url>/services/collector/event, Authorization: Splunk <token>).
type HEC struct {
	URL        string
	Token      string
	SourceType string
	Index      string
	Client     *http.Client
}

// Name implements Sink.
func (h *HEC) Name() string { return "hec" }

type hecEvent struct {
	Time       float64           `json:"time"`
	Source     string            `json:"source"`
	SourceType string            `json:"sourcetype"`
	Index      string            `json:"index,omitempty"`
	Event      json.RawMessage   `json:"event"`
	Fields     map[string]string `json:"fields"`
}

// Deliver posts the batch as concatenated events and requires a 2xx answer.
func (h *HEC) Deliver(ctx context.Context, batch []Item) error {
	if len(batch) == 0 {
		return nil
	}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	st := h.SourceType
	if st == "" {
		st = "sluice:audit"
	}
	for _, it := range batch {
		if err := enc.Encode(hecEvent{
			Time: float64(it.Time.UnixNano()) / 1e9, Source: "sluice", SourceType: st, Index: h.Index, Event: it.Body,
			Fields: map[string]string{"event_id": it.ID, "session": it.Session, "kind": it.Kind},
		}); err != nil {
			return err
		}
	}
	url := strings.TrimRight(h.URL, "/")
	if !strings.HasSuffix(url, "/services/collector/event") {
		url += "/services/collector/event"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Splunk "+h.Token)
	req.Header.Set("Content-Type", "application/json")
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("hec: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("hec: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// Close implements Sink.
func (h *HEC) Close() error { return nil }
