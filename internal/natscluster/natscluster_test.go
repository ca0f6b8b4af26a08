package natscluster_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"chatserver/internal/chat/clustertest"
	"chatserver/internal/natscluster"
	"chatserver/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestContract runs the cluster contract on one NATS server, each node
// linked to it through a proxy the fault cases hurt.
func TestContract(t *testing.T) {
	clustertest.Run(t, func(t *testing.T, n, maxUsers int) []clustertest.Node {
		ns := natstest.Run(t)
		name := clusterName()
		var nodes []clustertest.Node
		for range n {
			proxy := natstest.NewProxy(t, ns.Addr())
			nodes = append(nodes, clustertest.Node{Cluster: newNode(t, proxy.URL(), name, maxUsers), Link: proxy})
		}
		return nodes
	})
}

// TestContractOnANATSCluster runs it on three routed NATS servers, each
// node on another one.
func TestContractOnANATSCluster(t *testing.T) {
	nats := natstest.RunCluster(t, 3)
	clustertest.Run(t, func(t *testing.T, n, maxUsers int) []clustertest.Node {
		name := clusterName()
		var nodes []clustertest.Node
		for i := range n {
			proxy := natstest.NewProxy(t, nats.Nodes[i%len(nats.Nodes)].Addr())
			nodes = append(nodes, clustertest.Node{Cluster: newNode(t, proxy.URL(), name, maxUsers), Link: proxy})
		}
		return nodes
	})
}

// clusters counts the clusters made, so each has its own name on a shared
// NATS.
var clusters atomic.Int64

func clusterName() string { return fmt.Sprintf("c%d", clusters.Add(1)) }

func newNode(t *testing.T, url, cluster string, maxUsers int) *natscluster.Cluster {
	t.Helper()
	nc := natstest.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := natscluster.New(ctx, nc, natscluster.Config{Cluster: cluster, MaxUsers: maxUsers, MaxMessageBytes: 1 << 10})
	if err != nil {
		t.Fatalf("natscluster.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
