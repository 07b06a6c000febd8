// A Python language host for the e2e run, built from the Pulumi SDK's Go module at the CLI's version.
//
// Pulumi's own host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is not served by
// the Go module proxy this project reaches, at any version. What it does for a Python program is small and lives
// in sdk/v3, which is served: pick the program's python (sdk/v3/python/toolchain: the `virtualenv`/`toolchain`
// runtime options), run the SDK's executor script (sdk/v3/python/cmd/pulumi-language-python-exec, which
// e2e/tools.py installs beside this binary) with the engine's arguments, and run policy packs with
// `python -u -m pulumi.policy` behind the SDK's policy proxy. This file does only that; program generation,
// debugging, typecheckers, `pulumi install` and `pulumi about` answer Unimplemented.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	sdk "github.com/pulumi/pulumi/sdk/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The exit code with which the executor says it has already shown the user an actionable message.
const bailExitCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	exec, engine, tracing string
}

func main() {
	var h host
	flag.StringVar(&h.tracing, "tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	showVersion := flag.Bool("version", false, "Print the plugin version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.Version)
		return
	}
	logging.InitLogging(false, 0, false)
	self, err := os.Executable()
	if err != nil {
		cmdutil.Exit(err)
	}
	h.exec = filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	if _, err := os.Stat(h.exec); err != nil {
		cmdutil.Exit(fmt.Errorf("missing executor: %w", err))
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	stop := make(chan bool)
	go func() { <-ctx.Done(); cancel(); close(stop) }()
	if args := flag.Args(); len(args) > 0 {
		h.engine = args[0]
		if err := rpcutil.Healthcheck(ctx, h.engine, 5*time.Minute, cancel); err != nil {
			cmdutil.Exit(fmt.Errorf("could not start health check host RPC server: %w", err))
		}
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init:   func(srv *grpc.Server) error { pulumirpc.RegisterLanguageRuntimeServer(srv, &h); return nil },
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

// python resolves the program's (or policy pack's) python from its runtime options, as Pulumi's host does.
func python(info *pulumirpc.ProgramInfo, forPlugin bool) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{Root: info.RootDirectory, ProgramDir: info.ProgramDirectory}
	options := info.GetOptions().AsMap()
	if v, ok := options["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	switch options["toolchain"] {
	case "pip":
		opts.Toolchain = toolchain.Pip
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	}
	if forPlugin && (opts.Toolchain == toolchain.Pip || opts.Toolchain == toolchain.Auto) && opts.Virtualenv == "" {
		opts.Virtualenv = "venv"
	}
	return toolchain.ResolveToolchain(opts)
}

func (h *host) Handshake(
	ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engine = req.EngineAddress
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// Lists the installed distributions that are Pulumi packages (a pulumi-plugin.json, or a pulumi- name).
const listPackages = `import importlib.metadata as md, importlib.util as iu, json, os
out = []
for d in md.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    path = ""
    try:
        spec = iu.find_spec(name.replace("-", "_"))
        for loc in (spec.submodule_search_locations or []) if spec else []:
            if os.path.isfile(os.path.join(loc, "pulumi-plugin.json")):
                path = os.path.join(loc, "pulumi-plugin.json")
                break
    except Exception:
        pass
    if path or name.startswith("pulumi-"):
        out.append({"name": name, "version": d.version, "plugin": path})
print(json.dumps(out))`

// GetRequiredPackages names the resource plugins of the Pulumi packages installed in the program's environment,
// so that the CLI can check (and, unless told not to, install) them before the program runs.
func (h *host) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	tc, err := python(req.Info, false)
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPackages)
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the program's Python packages: %w", err)
	}
	var dists []struct{ Name, Version, Plugin string }
	if err := json.Unmarshal(out, &dists); err != nil {
		return nil, err
	}
	release := regexp.MustCompile(`^\d+\.\d+\.\d+$`)
	var pkgs []*pulumirpc.PackageDependency
	for _, d := range dists {
		if d.Name == "pulumi-policy" || d.Name == "pulumi-esc-sdk" {
			continue
		}
		var meta plugin.PulumiPluginJSON
		if d.Plugin != "" {
			data, err := os.ReadFile(d.Plugin)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(data, &meta); err != nil {
				return nil, fmt.Errorf("%s: %w", d.Plugin, err)
			}
			if !meta.Resource {
				continue
			}
		}
		name, ver := meta.Name, meta.Version
		if name == "" {
			name = strings.TrimPrefix(d.Name, "pulumi-")
		}
		if ver == "" {
			if !release.MatchString(d.Version) {
				continue // a pre-release's plugin version cannot be derived from the package's
			}
			ver = d.Version
		}
		dep := &pulumirpc.PackageDependency{
			Kind: "resource", Name: name, Version: "v" + strings.TrimPrefix(ver, "v"), Server: meta.Server,
		}
		if p := meta.Parameterization; p != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{Name: p.Name, Version: p.Version, Value: p.Value}
		}
		pkgs = append(pkgs, dep)
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: pkgs}, nil
}

// Run runs the program with the SDK's executor: `python pulumi-language-python-exec --monitor ... <entry point>`.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	args := []string{h.exec}
	for _, kv := range [][2]string{
		{"monitor", req.GetMonitorAddress()}, {"engine", h.engine}, {"project", req.GetProject()},
		{"root_directory", req.GetInfo().GetRootDirectory()}, {"stack", req.GetStack()}, {"pwd", req.GetPwd()},
		{"dry_run", strconv.FormatBool(req.GetDryRun())}, {"parallel", strconv.Itoa(int(req.GetParallel()))},
		{"tracing", h.tracing}, {"organization", req.GetOrganization()},
	} {
		if kv[1] != "" {
			args = append(args, "--"+kv[0], kv[1])
		}
	}
	args = append(append(args, req.Info.EntryPoint), req.GetArgs()...)

	tc, err := python(req.Info, false)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	config, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	keys, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	if req.GetConfig() != nil {
		cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config))
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG_SECRET_KEYS="+string(keys))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second

	if err := cmd.Run(); err != nil {
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() == bailExitCode:
			return &pulumirpc.RunResponse{Bail: true}, nil
		case errors.As(err, &exit):
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d",
				exit.ExitCode())}, nil
		default:
			return &pulumirpc.RunResponse{Error: fmt.Sprintf(
				"problem executing program (could not run language executor): %v", err)}, nil
		}
	}
	return &pulumirpc.RunResponse{}, nil
}

// RunPlugin runs a policy pack (`python -u -m pulumi.policy <args> <pack dir>`, in the pack's directory, with the
// stack's configuration that the SDK's policy proxy receives first) or a plugin's __main__.py.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	ctx := server.Context()
	analyzer := req.Kind == string(apitype.AnalyzerPlugin)
	tc, err := python(req.Info, !analyzer)
	if err != nil {
		return err
	}
	var args []string
	if analyzer {
		args = append(append([]string{"-u", "-m", "pulumi.policy"}, req.Args...), req.Info.ProgramDirectory)
	} else {
		args = append([]string{req.Info.ProgramDirectory}, req.Args...)
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	var proxy *sdk.PolicyProxy
	cmd.Dir = req.Pwd
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	if analyzer {
		cmd.Dir = req.Info.ProgramDirectory
		if proxy, stdout, err = sdk.NewPolicyProxy(ctx, stdout); err != nil {
			return fmt.Errorf("could not start policy pack proxy: %w", err)
		}
		config, err := proxy.AwaitConfiguration(ctx)
		if err != nil {
			return fmt.Errorf("could not get stack configuration: %w", err)
		}
		if config != nil {
			for k, v := range map[string]string{"PULUMI_ORGANIZATION": config.Organization,
				"PULUMI_PROJECT": config.Project, "PULUMI_STACK": config.Stack,
				"PULUMI_DRY_RUN": strconv.FormatBool(config.DryRun)} {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			if config.Config != nil {
				data, err := json.Marshal(config.Config)
				if err != nil {
					return err
				}
				cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(data))
			}
		}
	}
	cmd.Env = append(cmd.Env, req.Env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("problem executing plugin program (could not run language executor): %w", err)
	}
	if proxy != nil {
		err = proxy.Attach(ctx, cmd)
	} else {
		err = cmd.Wait()
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return server.Send(&pulumirpc.RunPluginResponse{
			Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exit.ExitCode())},
		})
	} else if err != nil {
		return err
	}
	return closer.Close()
}
