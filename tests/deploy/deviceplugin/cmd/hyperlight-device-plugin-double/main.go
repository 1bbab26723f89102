// Command hyperlight-device-plugin-double is a TEST DOUBLE of the upstream Hyperlight Kubernetes device plugin
// (hyperlight-dev/hyperlight-on-kubernetes, directory device-plugin/), written for this project because the Go
// module proxy refuses to serve the upstream module (see scripts/tools/device-plugin.sh, which records the
// refusal). It implements the same contract as the upstream binary, which is what the DaemonSet has to satisfy:
//
//   - the hypervisor is /dev/mshv if it exists, else /dev/kvm; neither: exit 1 at start;
//   - it writes its CDI spec to the fixed path /var/run/cdi/hyperlight.json (creating /var/run/cdi, mode 0755;
//     file 0644; kind hyperlight.dev/hypervisor, one device named after the hypervisor whose device node is
//     owned by DEVICE_UID:DEVICE_GID, default 65534:65534); if that fails it exits at start;
//   - it serves the device-plugin API v1beta1 on /var/lib/kubelet/device-plugins/hyperlight.sock and registers
//     resource hyperlight.dev/hypervisor with the kubelet at /var/lib/kubelet/device-plugins/kubelet.sock,
//     retrying every 5 s while registration fails;
//   - it advertises DEVICE_COUNT (default 2000) healthy devices named <hypervisor>-<i>, and Allocate answers with
//     the CDI device hyperlight.dev/hypervisor=<hypervisor>;
//   - when its socket disappears (the kubelet restarted) it serves and registers again; SIGTERM removes it.
//
// The paths are constants on purpose, as upstream: the DaemonSet's mounts must put the host folders there.
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
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const (
	resourceName = "hyperlight.dev/hypervisor"
	socketName   = "hyperlight.sock"
	cdiSpecFile  = "/var/run/cdi/hyperlight.json"
)

var pluginSocket = filepath.Join(pluginapi.DevicePluginPath, socketName)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	hypervisor, devicePath string
	devices                []*pluginapi.Device
}

func envInt(name string, fallback, minimum int) int {
	raw := os.Getenv(name)
	if raw == "" {
		return fallback
	}
	value, err := strconv.Atoi(raw)
	if err != nil || value < minimum {
		log.Printf("invalid %s=%q, using %d", name, raw, fallback)
		return fallback
	}
	return value
}

func detect() (hypervisor, path string, err error) {
	for _, candidate := range []string{"mshv", "kvm"} {
		if _, statErr := os.Stat("/dev/" + candidate); statErr == nil {
			return candidate, "/dev/" + candidate, nil
		}
	}
	return "", "", fmt.Errorf("no supported hypervisor found (/dev/kvm or /dev/mshv)")
}

type cdiDeviceNode struct {
	Path        string `json:"path"`
	Type        string `json:"type"`
	Permissions string `json:"permissions"`
	UID         int    `json:"uid"`
	GID         int    `json:"gid"`
}

func writeCDISpec(hypervisor, path string, uid, gid int) error {
	spec := map[string]any{
		"cdiVersion": "0.6.0",
		"kind":       resourceName,
		"devices": []any{map[string]any{
			"name": hypervisor,
			"containerEdits": map[string]any{
				"deviceNodes": []cdiDeviceNode{{Path: path, Type: "c", Permissions: "rw", UID: uid, GID: gid}},
				"env":         []string{"HYPERLIGHT_HYPERVISOR=" + hypervisor, "HYPERLIGHT_DEVICE_PATH=" + path},
			},
		}},
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(cdiSpecFile), 0o755); err != nil {
		return err
	}
	return os.WriteFile(cdiSpecFile, data, 0o644)
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	log.Printf("ListAndWatch: sending %d devices", len(p.devices))
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	ticker := time.NewTicker(30 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-ticker.C:
			health := pluginapi.Healthy
			if _, err := os.Stat(p.devicePath); err != nil {
				health = pluginapi.Unhealthy
			}
			if p.devices[0].Health != health {
				for _, device := range p.devices {
					device.Health = health
				}
				if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
					return err
				}
			}
		}
	}
}

func (p *plugin) Allocate(_ context.Context, request *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	response := &pluginapi.AllocateResponse{}
	for range request.ContainerRequests {
		response.ContainerResponses = append(response.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			CdiDevices: []*pluginapi.CDIDevice{{Name: resourceName + "=" + p.hypervisor}},
		})
	}
	return response, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

// serve listens on the plugin socket and registers with the kubelet; the server is returned so it can be stopped.
func (p *plugin) serve() (*grpc.Server, error) {
	if err := os.Remove(pluginSocket); err != nil && !os.IsNotExist(err) {
		log.Printf("removing old socket: %v", err)
	}
	listener, err := net.Listen("unix", pluginSocket)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", pluginSocket, err)
	}
	server := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(server, p)
	go func() { _ = server.Serve(listener) }()
	log.Printf("serving on %s", pluginSocket)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+pluginapi.KubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		defer conn.Close()
		_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
			Version:      pluginapi.Version,
			Endpoint:     socketName,
			ResourceName: resourceName,
			Options:      &pluginapi.DevicePluginOptions{},
		})
	}
	if err != nil {
		server.Stop()
		return nil, fmt.Errorf("failed to register with kubelet: %w", err)
	}
	log.Printf("registered with kubelet as %s", resourceName)
	return server, nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.Printf("starting Hyperlight device plugin (test double of hyperlight-dev/hyperlight-on-kubernetes/device-plugin)")
	hypervisor, path, err := detect()
	if err != nil {
		log.Fatalf("failed to create device plugin: %v", err)
	}
	log.Printf("detected hypervisor: %s at %s", hypervisor, path)
	uid, gid := envInt("DEVICE_UID", 65534, 0), envInt("DEVICE_GID", 65534, 0)
	if err := writeCDISpec(hypervisor, path, uid, gid); err != nil {
		log.Fatalf("failed to create device plugin: failed to write CDI spec: %v", err)
	}
	log.Printf("CDI spec written to %s (device owner %d:%d)", cdiSpecFile, uid, gid)
	count := envInt("DEVICE_COUNT", 2000, 1)
	p := &plugin{hypervisor: hypervisor, devicePath: path}
	for i := 0; i < count; i++ {
		p.devices = append(p.devices, &pluginapi.Device{ID: fmt.Sprintf("%s-%d", hypervisor, i), Health: pluginapi.Healthy})
	}
	log.Printf("advertising %d hypervisor devices", count)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for {
			server, err := p.serve()
			if err != nil {
				log.Printf("failed to start device plugin: %v", err)
				time.Sleep(5 * time.Second)
				continue
			}
			for { // the kubelet removes every plugin socket when it restarts
				time.Sleep(time.Second)
				if _, err := os.Stat(pluginSocket); os.IsNotExist(err) {
					log.Printf("plugin socket deleted (kubelet restart?): registering again")
					break
				}
			}
			server.Stop()
		}
	}()
	log.Printf("received %v, shutting down", <-signals)
	_ = os.Remove(pluginSocket)
}
