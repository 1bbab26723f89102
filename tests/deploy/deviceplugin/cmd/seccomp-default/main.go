// Command seccomp-default prints, as OCI runtime-spec JSON (linux.seccomp), the seccomp profile that containerd
// applies to a container whose pod asks for `seccompProfile: {type: RuntimeDefault}` (containerd's
// contrib/seccomp.DefaultProfile, the profile the CRI plugin uses), for a process with no capabilities.
// The device-plugin test runs the plugin under it with runc.
package main

import (
	"encoding/json"
	"log"
	"os"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func main() {
	// The profile depends on the process's capabilities: the DaemonSet drops them all.
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	if err := json.NewEncoder(os.Stdout).Encode(seccomp.DefaultProfile(spec)); err != nil {
		log.Fatal(err)
	}
}
