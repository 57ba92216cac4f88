package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Event is one entry of the event log.
type Event struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Bundle   string    `json:"bundle"`
	Revision uint64    `json:"revision,omitempty"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message,omitempty"`
}

func appendEvent(tx *bolt.Tx, e Event) error {
	b := tx.Bucket(bucketEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	return putJSON(b, []byte(fmt.Sprintf("%020d", seq)), e)
}

// Events returns the events after sequence number after, oldest first, at most limit.
func (s *Store) Events(after uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek([]byte(fmt.Sprintf("%020d", after+1))); k != nil && len(out) < limit; k, v = c.Next() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Cursor returns the position a reader of the event log (a notifier) has recorded, 0 if none.
func (s *Store) Cursor(reader string) (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get([]byte("cursor/" + reader)); v != nil {
			return json.Unmarshal(v, &seq)
		}
		return nil
	})
	return seq, err
}

// SetCursor records that reader has handled every event up to seq, so it resumes after it
// across restarts: the event log is the outbox, the cursor what was delivered.
func (s *Store) SetCursor(reader string, seq uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketMeta), []byte("cursor/"+reader), seq)
	})
}

// AddEvent appends an event that is not a state change (a refused bundle, drift found).
func (s *Store) AddEvent(e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	return s.db.Update(func(tx *bolt.Tx) error { return appendEvent(tx, e) })
}
