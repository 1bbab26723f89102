// Command fake-kubelet serves the kubelet's side of the device-plugin API v1beta1 for tests: the Registration
// service on DIR/kubelet.sock. On each Register it checks the request as the kubelet does (API version, resource
// name shape), then dials the plugin back on DIR/<endpoint>, reads GetDevicePluginOptions and the first
// ListAndWatch answer, asks Allocate for one device, and prints JSON lines on stdout describing what it saw:
// {"event": "register", ...} for the request, then {"event": "plugin", "devices": N, ...} for the plugin's answers.
//
// Usage: fake-kubelet DIR
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type registration struct {
	Event        string         `json:"event"`
	Version      string         `json:"version"`
	Endpoint     string         `json:"endpoint"`
	ResourceName string         `json:"resourceName"`
	Devices      int            `json:"devices"`
	Health       map[string]int `json:"health"`
	FirstID      string         `json:"firstID,omitempty"`
	CDIDevices   []string       `json:"cdiDevices,omitempty"`
	Error        string         `json:"error,omitempty"`
}

type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir string
	out sync.Mutex
}

func (k *kubelet) emit(r registration) {
	k.out.Lock()
	defer k.out.Unlock()
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
}

func (k *kubelet) Register(_ context.Context, request *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	r := registration{Event: "register", Version: request.Version, Endpoint: request.Endpoint,
		ResourceName: request.ResourceName, Health: map[string]int{}}
	// The kubelet's own checks (pkg/kubelet/cm/devicemanager): a supported version and an extended resource name.
	if request.Version != pluginapi.Version {
		r.Error = fmt.Sprintf("unsupported API version %q", request.Version)
	} else if !strings.Contains(request.ResourceName, "/") || strings.HasPrefix(request.ResourceName, "kubernetes.io/") {
		r.Error = fmt.Sprintf("invalid extended resource name %q", request.ResourceName)
	} else if strings.Contains(request.Endpoint, "/") {
		r.Error = fmt.Sprintf("endpoint %q is not a file name in %s", request.Endpoint, k.dir)
	}
	k.emit(r)
	if r.Error != "" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	// Like the kubelet, talk back to the plugin asynchronously: Register must return first.
	go k.inspect(r)
	return &pluginapi.Empty{}, nil
}

func (k *kubelet) inspect(r registration) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, r.Endpoint),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		defer conn.Close()
		client := pluginapi.NewDevicePluginClient(conn)
		if _, err = client.GetDevicePluginOptions(ctx, &pluginapi.Empty{}, grpc.WaitForReady(true)); err == nil {
			var stream pluginapi.DevicePlugin_ListAndWatchClient
			if stream, err = client.ListAndWatch(ctx, &pluginapi.Empty{}); err == nil {
				var first *pluginapi.ListAndWatchResponse
				if first, err = stream.Recv(); err == nil {
					r.Devices = len(first.Devices)
					for _, device := range first.Devices {
						r.Health[device.Health]++
					}
					if len(first.Devices) > 0 {
						r.FirstID = first.Devices[0].ID
						var allocated *pluginapi.AllocateResponse
						allocated, err = client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
							{DevicesIds: []string{first.Devices[0].ID}}}})
						if err == nil {
							for _, container := range allocated.ContainerResponses {
								for _, device := range container.CdiDevices {
									r.CDIDevices = append(r.CDIDevices, device.Name)
								}
							}
						}
					}
				}
			}
		}
	}
	if err != nil {
		r.Error = err.Error()
	}
	r.Event = "plugin"
	k.emit(r)
}

func main() {
	if len(os.Args) != 2 {
		log.Fatalf("usage: %s DIR", os.Args[0])
	}
	dir := os.Args[1]
	socket := filepath.Join(dir, filepath.Base(pluginapi.KubeletSocket))
	_ = os.Remove(socket)
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatalf("listen on %s: %v", socket, err)
	}
	server := grpc.NewServer()
	k := &kubelet{dir: dir}
	pluginapi.RegisterRegistrationServer(server, k)
	k.emit(registration{Event: "listening", Endpoint: socket})
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-signals; server.Stop() }()
	if err := server.Serve(listener); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
