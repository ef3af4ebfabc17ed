package checkpoint_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/isobroker/broker/eventhubs/checkpoint"
	"github.com/isobroker/broker/eventhubs/checkpoint/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) checkpoint.Store { return checkpoint.NewMemoryStore() })
}

// One store shared by every subtest: names keep them apart.
func TestMemoryStoreConformanceShared(t *testing.T) {
	s := checkpoint.NewMemoryStore()
	storetest.Run(t, func(t *testing.T) checkpoint.Store { return s })
}

// Two stores share nothing.
func TestMemoryStoresAreIndependent(t *testing.T) {
	a, b := checkpoint.NewMemoryStore(), checkpoint.NewMemoryStore()
	o := checkpoint.Ownership{Namespace: "ns", EventHub: "hub", ConsumerGroup: "cg", PartitionID: "0", OwnerID: "m"}
	if got, err := a.ClaimOwnership(t.Context(), []checkpoint.Ownership{o}); err != nil || len(got) != 1 {
		t.Fatalf("claim on a: %v %v", got, err)
	}
	if got, err := b.ListOwnership(t.Context(), "ns", "hub", "cg"); err != nil || len(got) != 0 {
		t.Fatalf("b lists %v %v, want nothing", got, err)
	}
}
