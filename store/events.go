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
