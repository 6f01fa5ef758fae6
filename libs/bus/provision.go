package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream, or brings an existing one to cfg when the
// server allows it. It is safe to call from every replica at every start.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	// Look first: processes without the right to create streams (workers)
	// only need them to exist.
	s, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		s, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	if sameStream(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	s, err = js.UpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("update stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

func sameStream(have, want jetstream.StreamConfig) bool {
	if len(have.Subjects) != len(want.Subjects) {
		return false
	}
	for i := range have.Subjects {
		if have.Subjects[i] != want.Subjects[i] {
			return false
		}
	}
	return have.Retention == want.Retention &&
		have.Discard == want.Discard &&
		limit(have.MaxBytes) == limit(want.MaxBytes) &&
		limit(have.MaxMsgs) == limit(want.MaxMsgs) &&
		have.MaxAge == want.MaxAge &&
		have.DenyDelete == want.DenyDelete &&
		have.DenyPurge == want.DenyPurge &&
		have.AllowRollup == want.AllowRollup &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		(want.Replicas == 0 || have.Replicas == want.Replicas)
}

// EnsureKV creates a key-value bucket or returns the existing one.
func EnsureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf("create kv %s: %w", cfg.Bucket, err)
	}
	kv, err = js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("kv %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// limit treats 0 and -1 alike: both mean unlimited.
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Missing names the first of stores that does not exist yet; "" when all
// do. It only looks, so a component that may not create a stream waits for
// the one that owns it.
func Missing(ctx context.Context, js jetstream.JetStream, stores ...Store) (string, error) {
	for _, st := range stores {
		if st.Stream != "" {
			if _, err := js.Stream(ctx, st.Stream); errors.Is(err, jetstream.ErrStreamNotFound) {
				return "stream " + st.Stream, nil
			} else if err != nil {
				return "", fmt.Errorf("stream %s: %w", st.Stream, err)
			}
			continue
		}
		if _, err := js.KeyValue(ctx, st.Bucket); errors.Is(err, jetstream.ErrBucketNotFound) {
			return "bucket " + st.Bucket, nil
		} else if err != nil {
			return "", fmt.Errorf("bucket %s: %w", st.Bucket, err)
		}
	}
	return "", nil
}
