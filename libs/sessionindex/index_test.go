package sessionindex

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "sluice.dev/sluice/proto/sluice/common/v1"
	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

var epoch = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// session i started i seconds after epoch; every third is bob's, every
// fifth on target "billing" over ssh, every seventh had a denial, every
// eleventh a held command, every thirteenth masked values.
func session(i int) *sessionv1.Summary {
	at := epoch.Add(time.Duration(i) * time.Second)
	id, _ := ulid.New(ulid.Timestamp(at), ulid.DefaultEntropy())
	who, target, protocol := "alice", "orders", "postgres"
	if i%3 == 0 {
		who = "bob"
	}
	if i%5 == 0 {
		target, protocol = "billing", "ssh"
	}
	s := &sessionv1.Summary{SessionId: strings.ToLower(id.String()), Principal: &commonv1.Principal{Subject: who},
		Target: &commonv1.Target{Name: target}, Protocol: protocol, StartedAt: timestamppb.New(at)}
	if i%7 == 0 {
		s.Denied = 1
	}
	if i%11 == 0 {
		s.Held = 1
	}
	if i%13 == 0 {
		s.Masked = 2
	}
	return s
}

func filled(n int) (*Index, []*sessionv1.Summary) {
	x := New()
	all := make([]*sessionv1.Summary, n)
	for i := range all {
		all[i] = session(i)
		x.Put(all[i])
	}
	return x, all
}

// even keeps the sessions started an even number of seconds after epoch.
func even(s *sessionv1.Summary) bool { return s.GetStartedAt().AsTime().Sub(epoch)/time.Second%2 == 0 }

// Pages, newest first, cover every match exactly once, for every filter.
func TestPagesCoverEveryMatchOnce(t *testing.T) {
	x, all := filled(1000)
	for name, c := range map[string]struct {
		q     Query
		match func(i int) bool
	}{
		"all":            {Query{}, func(int) bool { return true }},
		"principal":      {Query{Principal: "bob"}, func(i int) bool { return i%3 == 0 }},
		"target":         {Query{Target: "billing"}, func(i int) bool { return i%5 == 0 }},
		"protocol":       {Query{Protocol: "postgres"}, func(i int) bool { return i%5 != 0 }},
		"denied":         {Query{Denied: true}, func(i int) bool { return i%7 == 0 }},
		"held":           {Query{Held: true}, func(i int) bool { return i%11 == 0 }},
		"masked":         {Query{Masked: true}, func(i int) bool { return i%13 == 0 }},
		"held, masked":   {Query{Held: true, Masked: true}, func(i int) bool { return i%143 == 0 }},
		"bob on billing": {Query{Principal: "bob", Target: "billing"}, func(i int) bool { return i%15 == 0 }},
		"kept, bob's":    {Query{Principal: "bob", Keep: even}, func(i int) bool { return i%6 == 0 }},
		"since":          {Query{Since: epoch.Add(900 * time.Second)}, func(i int) bool { return i >= 900 }},
		"until":          {Query{Until: epoch.Add(99 * time.Second)}, func(i int) bool { return i <= 99 }},
		"window":         {Query{Since: epoch.Add(100 * time.Second), Until: epoch.Add(199 * time.Second), Principal: "alice"}, func(i int) bool { return i >= 100 && i <= 199 && i%3 != 0 }},
	} {
		t.Run(name, func(t *testing.T) {
			var want []string
			for i := len(all) - 1; i >= 0; i-- {
				if c.match(i) {
					want = append(want, all[i].GetSessionId())
				}
			}
			var got []string
			q := c.q
			q.Limit = 37
			for pages := 0; ; pages++ {
				require.Less(t, pages, 100)
				p := x.Query(q)
				assert.LessOrEqual(t, len(p.Sessions), 37)
				for _, s := range p.Sessions {
					got = append(got, s.GetSessionId())
				}
				if p.Next == "" {
					break
				}
				q.Before = p.Next
			}
			assert.Equal(t, want, got)
		})
	}
}

// A session's end replaces its summary in place; a deleted one is gone;
// a late one takes its place in start order.
func TestUpdates(t *testing.T) {
	x, all := filled(10)
	ended := session(4)
	ended.SessionId = all[4].GetSessionId()
	ended.Commands, ended.EndReason = 12, "client closed"
	x.Put(ended)
	x.Delete(all[5].GetSessionId())
	late := session(11)
	x.Put(late)
	x.Put(session(10))
	p := x.Query(Query{})
	require.Len(t, p.Sessions, 11)
	assert.Equal(t, 11, x.Len())
	assert.Equal(t, late.GetSessionId(), p.Sessions[0].GetSessionId())
	var at4 *sessionv1.Summary
	for i, s := range p.Sessions {
		assert.NotEqual(t, all[5].GetSessionId(), s.GetSessionId())
		if i > 0 {
			assert.Less(t, s.GetSessionId(), p.Sessions[i-1].GetSessionId(), "newest first")
		}
		if s.GetSessionId() == all[4].GetSessionId() {
			at4 = s
		}
	}
	require.NotNil(t, at4)
	assert.Equal(t, int64(12), at4.GetCommands())
	assert.Empty(t, x.Query(Query{Principal: "nobody"}).Sessions)
}

// One page costs the same with 1,000 and with 100,000 sessions recorded.
func BenchmarkPage(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		x, _ := filled(n)
		for _, c := range []struct {
			name string
			q    Query
		}{{"newest", Query{Limit: 50}}, {"principal", Query{Principal: "bob", Limit: 50}}, {"target", Query{Target: "billing", Limit: 50}}} {
			b.Run(fmt.Sprintf("%s/%d", c.name, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if p := x.Query(c.q); len(p.Sessions) != 50 {
						b.Fatal(len(p.Sessions))
					}
				}
			})
		}
	}
}

// BenchmarkMemory reports what the index holds per session (bytes/session,
// the summaries included), the figure ARCHITECTURE.md sizes the API by.
func BenchmarkMemory(b *testing.B) {
	const n = 100000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		x, _ := filled(n)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/session")
		runtime.KeepAlive(x)
	}
}

// A session's id is made when its client connects, its start recorded
// later: one whose id is older than Since but that started after it is
// listed.
func TestSinceByStartNotByID(t *testing.T) {
	x := New()
	since := epoch.Add(time.Hour)
	id, _ := ulid.New(ulid.Timestamp(since.Add(-5*time.Second)), ulid.DefaultEntropy())
	slow := &sessionv1.Summary{SessionId: strings.ToLower(id.String()), StartedAt: timestamppb.New(since.Add(2 * time.Second))}
	x.Put(slow)
	x.Put(session(0)) // long before
	p := x.Query(Query{Since: since})
	require.Len(t, p.Sessions, 1)
	assert.Equal(t, slow.GetSessionId(), p.Sessions[0].GetSessionId())
}
