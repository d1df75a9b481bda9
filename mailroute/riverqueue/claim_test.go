package riverqueue_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/mailroute/go-mailroute/mailroute/queuetest"
	"github.com/mailroute/go-mailroute/mailroute/riverqueue"
)

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	Type     string     `json:"Node Type"`
	Relation string     `json:"Relation Name"`
	Index    string     `json:"Index Name"`
	Subplan  string     `json:"Subplan Name"`
	Rows     float64    `json:"Actual Rows"`
	Loops    float64    `json:"Actual Loops"`
	Removed  float64    `json:"Rows Removed by Filter"`
	Plans    []planNode `json:"Plans"`
}

// read is how many rows the nodes under n (n included) read from a table
// or an index, whether they kept them or not.
func (n planNode) read() float64 {
	var r float64
	if n.Relation != "" {
		r = (n.Rows + n.Removed) * n.Loops
	}
	for _, c := range n.Plans {
		r += c.read()
	}
	return r
}

func (n planNode) find(subplan string) (planNode, bool) {
	if n.Subplan == subplan {
		return n, true
	}
	for _, c := range n.Plans {
		if f, ok := c.find(subplan); ok {
			return f, true
		}
	}
	return planNode{}, false
}

// A claim reads what it leases, not the queue: the walk of due messages
// stops at the claim's Max, with or without statistics on the tables.
// Before, without statistics on river_job (a new table, or one analysed
// while nearly empty, then a burst of mail), every claim read every job of
// the queue and sorted them to lease a few.
func TestClaimReadsOnlyWhatItLeases(t *testing.T) {
	const queued, max = 2000, 10
	s, pool := newStore(t)
	ctx := context.Background()
	t0 := queuetest.T0
	for i := 0; i < queued; i += 500 {
		if err := s.EnqueueBatch(ctx, batchOf(500, fmt.Sprintf("c%d-", i), t0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			if _, err := pool.Exec(ctx, `ANALYZE river_job; ANALYZE mailroute_message`); err != nil {
				t.Fatal(err)
			}
		}
		now := t0.Add(time.Minute)
		// In a transaction rolled back, so that each walk finds the
		// same queue.
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		err = tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+riverqueue.ClaimSQL,
			riverqueue.DefaultQueue, now, max, now.Add(time.Minute), "test", now, 1<<10).Scan(&out)
		tx.Rollback(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var plan []struct {
			Plan planNode `json:"Plan"`
		}
		if err := json.Unmarshal(out, &plan); err != nil || len(plan) != 1 {
			t.Fatalf("EXPLAIN: %v %s", err, out)
		}
		due, ok := plan[0].Plan.find("CTE due")
		if !ok {
			t.Fatalf("no CTE due in %s", out)
		}
		if due.Rows != max {
			t.Errorf("analysed %v: the walk leased %v, want %d", analyzed, due.Rows, max)
		}
		// Each leased message: its row, and its job in the sub-select.
		if r := due.read(); r > 2*max {
			t.Errorf("analysed %v: the walk read %v rows to lease %d of %d queued, want at most %d", analyzed, r, max, queued, 2*max)
		}
	}
}
