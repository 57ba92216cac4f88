package verify

import (
	"encoding/json"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

// The scopes a node enforces at every apply come back from the record Ingest stores (the
// JSON of a Result) through ParseRecord: a field renamed or left out of the JSON on one side
// only would drop a key's namespace confinement, and fails here.
func TestRecordKeepsSignerScopes(t *testing.T) {
	scope := &bundles.Scope{Bundles: []string{"team-a-*"}, Namespaces: []string{"team-a"}, ServiceAccount: "deployer"}
	in := Result{Digest: "sha256:aa", Threshold: 1, Signers: []Signer{{KeyID: "sha256:k1", Scope: scope}, {KeyID: "sha256:k2"}}}
	b, err := json.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	got := out.Scopes()
	if len(got) != 1 || got[0].ServiceAccount != "deployer" || len(got[0].Namespaces) != 1 || got[0].Namespaces[0] != "team-a" || got[0].Bundles[0] != "team-a-*" {
		t.Fatalf("scopes after the round trip: %+v", got)
	}
	if _, err := ParseRecord([]byte("{")); err == nil {
		t.Fatal("a damaged record parsed")
	}
}
