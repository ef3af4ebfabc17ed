package runner

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// machine describes where the numbers were taken.
type machine struct {
	cpu       string
	cores     int
	memGiB    float64
	os        string
	kernel    string
	goVersion string
	loadStart string
	loadEnd   string
}

func describeMachine() machine {
	m := machine{cores: runtime.NumCPU(), goVersion: runtime.Version(), loadStart: readLoad()}
	m.cpu = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.Fields(procField("/proc/meminfo", "MemTotal") + " 0")[0], 64); err == nil {
		m.memGiB = kb / (1 << 20)
	}
	m.os = strings.Trim(procField("/etc/os-release", "PRETTY_NAME"), `"`)
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if m.os == "" {
		m.os = runtime.GOOS
	}
	return m
}

func (m machine) oneLine() string {
	return fmt.Sprintf("%s, %d cores, %.0f GiB, %s (Linux %s), %s", m.cpu, m.cores, m.memGiB, m.os, m.kernel, m.goVersion)
}

// chartLines is the machine for a chart caption, in lines short enough
// for wide fallback fonts.
func (m machine) chartLines() string {
	return fmt.Sprintf("%s, %d cores, %.0f GiB\n%s, Linux %s", m.cpu, m.cores, m.memGiB, m.os, m.kernel)
}

// procField reads "key: value" or "KEY=value" from a text file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, sep := range []string{":", "="} {
			if k, v, ok := strings.Cut(line, sep); ok && strings.TrimSpace(k) == key {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func readLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// cpuTimes are the machine's CPU jiffies from /proc/stat: all, and
// stolen by the hypervisor (time a virtual CPU wanted to run and could
// not: load from other virtual machines).
type cpuTimes struct{ total, steal uint64 }

func readCPUTimes() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, s := range f[1:] {
		v, _ := strconv.ParseUint(s, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal (guest time is inside user)
			t.total += v
		}
		if i == 7 {
			t.steal = v
		}
	}
	return t
}

// stealShare is the share of CPU time stolen between a and b.
func stealShare(a, b cpuTimes) string {
	if b.total <= a.total {
		return "unknown"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(b.steal-a.steal)/float64(b.total-a.total))
}

// versions of every contender, from the binary's build information.
type versions struct {
	ours, amqp091, watermill, watermillAMQP, azeventhubs, goAMQP, plot string
	rabbitServer                                                       string
}

func readVersions(admin *amqp.Connection) versions {
	v := versions{ours: oursVersion()}
	dep := map[string]*string{
		"github.com/rabbitmq/amqp091-go":                                 &v.amqp091,
		"github.com/ThreeDotsLabs/watermill":                             &v.watermill,
		"github.com/ThreeDotsLabs/watermill-amqp/v3":                     &v.watermillAMQP,
		"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2": &v.azeventhubs,
		"github.com/Azure/go-amqp":                                       &v.goAMQP,
		"gonum.org/v1/plot":                                              &v.plot,
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if p, ok := dep[d.Path]; ok {
				*p = d.Version
			}
		}
	}
	if v.amqp091 == "" { // test binaries carry no dependency list: read go.mod
		for _, name := range []string{"go.mod", "../go.mod"} {
			b, err := os.ReadFile(name)
			if err != nil || !strings.Contains(string(b), "module github.com/isobroker/broker/bench") {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) >= 2 {
					if p, ok := dep[f[0]]; ok && *p == "" {
						*p = f[1]
					}
				}
			}
		}
	}
	for _, p := range dep {
		if *p == "" {
			*p = "(unknown)"
		}
	}
	v.rabbitServer = "(unknown)"
	if admin != nil {
		if s, ok := admin.Properties["version"].(string); ok {
			v.rabbitServer = s
		}
	}
	return v
}

// oursVersion is the isobroker commit the bench was built from (the bench
// module replaces it with the working tree): read-only git queries.
func oursVersion() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "(working tree)"
	}
	v := "@" + strings.TrimSpace(string(out))
	st, err := exec.Command("git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(strings.TrimSpace(string(st))) > 0 {
		v += "+changes"
	}
	return v
}

// processCPU is the CPU time (user + system) this process has used so
// far: getrusage(RUSAGE_SELF). The servers run in other processes, so a
// difference of two readings around a run is the client's cost alone.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerK is CPU time per 1,000 messages, in milliseconds.
func cpuPerK(cpu time.Duration, msgs float64) float64 {
	if msgs == 0 {
		return math.NaN()
	}
	return float64(cpu) / float64(time.Millisecond) / msgs * 1000
}
