package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkStateChange measures one recorded state change (SetState, as a rollout writes
// several) on a node that holds 10 revisions with a 1,001-object inventory each and 1,000
// events: with the backup that follows every change (Tx.WriteTo, fsync, rename), beside its
// peer, the same bbolt transaction and fsync without it.
//
//	go test -run '^$' -bench StateChange -benchtime 200x ./store/
func BenchmarkStateChange(b *testing.B) {
	for _, tc := range []struct {
		name     string
		noBackup bool
	}{{"with-backup", false}, {"bbolt-commit-only", true}} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(dir, Options{SpaceMargin: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.noBackup = true
			inv := []byte(`{"objects":[` + strings.TrimSuffix(strings.Repeat(`{"group":"","version":"v1","kind":"ConfigMap","namespace":"site","name":"config-0000","hash":"sha256:0123456789abcdef0123456789abcdef","resourceVersion":"123456"},`, 1001), ",") + `]}`)
			for rev := uint64(1); rev <= 10; rev++ {
				src, a := admission(b, "site", rev, fmt.Sprintf("payload %d", rev))
				if _, err := s.Admit(b.Context(), src, a); err != nil {
					b.Fatal(err)
				}
				if err := s.PutInventory("site", rev, "app", inv); err != nil {
					b.Fatal(err)
				}
			}
			for i := range 1000 {
				s.AddEvent(Event{Bundle: "site", Reason: "Drift", Message: fmt.Sprintf("drift %d: 3 objects drifted, 3 corrected", i)})
			}
			s.noBackup = tc.noBackup
			fi, _ := os.Stat(filepath.Join(dir, dbFile))
			b.ResetTimer()
			for i := range b.N {
				st := StateApplying
				if i%2 == 1 {
					st = StateHealthy
				}
				if err := s.setState("site", 10, st, "", time.Now().Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
		})
	}
}
