package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FailLabel marks pods that the testbed's kwok keeps Running but never Ready. Put it on a
// pod template (value "true") to make a rollout fail on purpose.
const FailLabel = "testbed.ferry.dev/fail"

// kwokStages are the upstream Stages the testbed runs, as copied by tools/build.sh.
var kwokStages = []string{"node-initialize.yaml", "node-heartbeat.yaml", "pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml"}

// failStage moves a pending pod carrying FailLabel to Running with its containers started but
// not ready, the way a pod whose readiness probe keeps failing looks.
const failStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ferry-pod-never-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
    - key: '.metadata.labels."` + FailLabel + `"'
      operator: 'In'
      values:
      - 'true'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`

// readySelector is where the upstream pod-ready Stage lists its conditions; the testbed adds
// one that leaves pods with FailLabel to failStage.
const readySelector = "  selector:\n    matchExpressions:\n"

const notFailing = "    - key: '.metadata.labels.\"" + FailLabel + "\"'\n      operator: 'DoesNotExist'\n"

// writeStages concatenates the upstream Stages and ours into one kwok config file.
func writeStages(stageDir, out string) error {
	docs := make([]string, 0, len(kwokStages)+1)
	for _, name := range kwokStages {
		b, err := os.ReadFile(filepath.Join(stageDir, name))
		if err != nil {
			return fmt.Errorf("kwok stage: %w", err)
		}
		s := string(b)
		if name == "pod-ready.yaml" {
			if !strings.Contains(s, readySelector) {
				return fmt.Errorf("kwok stage %s: selector not where the testbed expects it; update stages.go", name)
			}
			s = strings.Replace(s, readySelector, readySelector+notFailing, 1)
		}
		docs = append(docs, s)
	}
	docs = append(docs, failStage)
	return os.WriteFile(out, []byte(strings.Join(docs, "\n---\n")), 0o600)
}
