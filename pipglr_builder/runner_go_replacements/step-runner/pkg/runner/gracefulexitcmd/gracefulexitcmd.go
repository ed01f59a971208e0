// Package gracefulexitcmd builds commands that get SIGTERM, not SIGKILL, when their context ends.
package gracefulexitcmd

import (
	"context"
	"os/exec"
	"syscall"
	"time"
)

// New returns a command that is sent SIGTERM when ctx is done, and whose
// pipes are force-closed (and process killed) once delay has passed after that.
func New(ctx context.Context, delay time.Duration, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = delay
	return cmd
}
