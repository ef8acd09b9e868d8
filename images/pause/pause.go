// The pod sandbox's "pause" process for the real-node test cluster (no registry serves
// registry.k8s.io/pause here): it holds the pod's namespaces open, reaps nothing, and
// exits on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
