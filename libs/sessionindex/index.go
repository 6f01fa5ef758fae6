// Package sessionindex is the read model `sessions list` answers from: the
// session summaries the recorder keeps in the sluice_sessions bucket,
// followed with one watch (Follow) and indexed by start, principal, target
// and protocol, so that a page costs what the page holds, not what history
// holds. Session ids are ULIDs: their order is their start order, and a
// page's cursor is the last id it showed.
//
// The index is a projection: it is rebuilt from the bucket whenever a
// process starts, and holds nothing the bucket does not.
package sessionindex

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	sessionv1 "sluice.dev/sluice/proto/sluice/session/v1"
)

// Query selects sessions, newest first.
type Query struct {
	// Principal (subject), Target and Protocol, when set, must match.
	Principal, Target, Protocol string
	// Since and Until bound the start time.
	Since, Until time.Time
	// Denied, Held and Masked keep only sessions with a denied command, a
	// command held for approval, or masked values.
	Denied, Held, Masked bool
	// Keep, when set, keeps only the sessions it says yes to (a state the
	// index does not hold, such as lost: see Workers). It is called with
	// the index locked for reading.
	Keep func(*sessionv1.Summary) bool
	// Before is a page's cursor: only sessions older than this id.
	Before string
	// Limit is the page size (default 100).
	Limit int
}

// Page is one page of an answer.
type Page struct {
	Sessions []*sessionv1.Summary
	// Next is the cursor of the next page ("" when this is the last).
	Next string
}

// Index holds the summaries and their indexes. The zero value is not
// useful: use New.
type Index struct {
	mu   sync.RWMutex
	byID map[string]*sessionv1.Summary
	all  ids
	by   [3]map[string]*ids // principal, target, protocol
}

const (
	byPrincipal = iota
	byTarget
	byProtocol
)

// New returns an empty index.
func New() *Index {
	x := &Index{byID: map[string]*sessionv1.Summary{}}
	for i := range x.by {
		x.by[i] = map[string]*ids{}
	}
	return x
}

func keys(s *sessionv1.Summary) [3]string {
	return [3]string{s.GetPrincipal().GetSubject(), s.GetTarget().GetName(), s.GetProtocol()}
}

// Put adds or replaces a session's summary.
func (x *Index) Put(s *sessionv1.Summary) {
	id := s.GetSessionId()
	if id == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	old, ok := x.byID[id]
	x.byID[id] = s
	if !ok {
		x.all.add(id)
		for i, k := range keys(s) {
			x.list(i, k).add(id)
		}
		return
	}
	// A session's end keeps who, where and how; should a summary change
	// them, it moves.
	oldKeys, newKeys := keys(old), keys(s)
	for i := range oldKeys {
		if oldKeys[i] != newKeys[i] {
			x.list(i, oldKeys[i]).remove(id)
			x.list(i, newKeys[i]).add(id)
		}
	}
}

// Delete removes a session.
func (x *Index) Delete(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s, ok := x.byID[id]
	if !ok {
		return
	}
	delete(x.byID, id)
	x.all.remove(id)
	for i, k := range keys(s) {
		x.list(i, k).remove(id)
	}
}

// Len is the number of sessions held.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byID)
}

func (x *Index) list(i int, key string) *ids {
	l := x.by[i][key]
	if l == nil {
		l = &ids{}
		x.by[i][key] = l
	}
	return l
}

// Query answers one page. It walks the narrowest index the query names
// from its cursor (or Until) down, and stops at Limit or at Since.
func (x *Index) Query(q Query) Page {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	list := &x.all
	switch {
	case q.Principal != "":
		list = x.by[byPrincipal][q.Principal]
	case q.Target != "":
		list = x.by[byTarget][q.Target]
	case q.Protocol != "":
		list = x.by[byProtocol][q.Protocol]
	}
	if list == nil {
		return Page{}
	}
	end := len(*list)
	if q.Before != "" {
		end = sort.SearchStrings(*list, strings.ToLower(q.Before))
	}
	if !q.Until.IsZero() {
		// Ids of sessions started after Until are above this bound (an
		// id is made before its session's start is recorded).
		end = min(end, sort.SearchStrings(*list, idBound(q.Until.Add(time.Millisecond))))
	}
	var page Page
	for i := end - 1; i >= 0; i-- {
		id := (*list)[i]
		// A session's id is made when its client connects, its start is
		// recorded once it reached its target (up to the target timeout
		// later): stop only well before Since.
		if t := idTime(id); !q.Since.IsZero() && !t.IsZero() && t.Before(q.Since.Add(-idSkew)) {
			break // older still, all of them
		}
		s := x.byID[id]
		st := s.GetStartedAt().AsTime()
		switch {
		case q.Principal != "" && s.GetPrincipal().GetSubject() != q.Principal,
			q.Target != "" && s.GetTarget().GetName() != q.Target,
			q.Protocol != "" && s.GetProtocol() != q.Protocol,
			q.Denied && s.GetDenied() == 0,
			q.Held && s.GetHeld() == 0,
			q.Masked && s.GetMasked() == 0,
			!q.Since.IsZero() && st.Before(q.Since),
			!q.Until.IsZero() && st.After(q.Until),
			q.Keep != nil && !q.Keep(s):
			continue
		}
		if len(page.Sessions) == q.Limit {
			page.Next = page.Sessions[len(page.Sessions)-1].GetSessionId()
			break
		}
		page.Sessions = append(page.Sessions, s)
	}
	return page
}

// idSkew bounds how long before its recorded start a session's id is made.
const idSkew = time.Minute

// idBound is the smallest session id of a session started at t.
func idBound(t time.Time) string {
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(t))
	return strings.ToLower(id.String())
}

// idTime is when the session an id names started (its ULID time); the
// zero time for an id that is not a ULID.
func idTime(id string) time.Time {
	u, err := ulid.ParseStrict(strings.ToUpper(id))
	if err != nil {
		return time.Time{}
	}
	return ulid.Time(u.Time())
}

// ids is a sorted list of session ids. New sessions come in order, so
// adding is an append but for the rare late one.
type ids []string

func (l *ids) add(id string) {
	s := *l
	if n := len(s); n == 0 || s[n-1] < id {
		*l = append(s, id)
		return
	}
	i := sort.SearchStrings(s, id)
	if i < len(s) && s[i] == id {
		return
	}
	s = append(s, "")
	copy(s[i+1:], s[i:])
	s[i] = id
	*l = s
}

func (l *ids) remove(id string) {
	s := *l
	i := sort.SearchStrings(s, id)
	if i < len(s) && s[i] == id {
		*l = append(s[:i], s[i+1:]...)
	}
}
