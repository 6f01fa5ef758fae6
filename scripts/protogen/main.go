// Command protogen generates the Go code of proto/ without protoc: it compiles
// the .proto files with a pure-Go compiler (github.com/bufbuild/protocompile,
// which carries the well-known types such as google/protobuf/timestamp.proto),
// hands the descriptors to protoc-gen-go exactly as protoc would (a
// CodeGeneratorRequest on its stdin), and writes or compares the files it
// returns. So neither `make proto` nor the staleness check in `make test`
// depends on a system protoc, its version or its include files.
//
//	go run ./scripts/protogen -plugin .tools/protoc-gen-go [-check] [-dir proto]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/pluginpb"
)

func main() {
	dir := flag.String("dir", "proto", "root of the .proto files (also where generated code goes)")
	plugin := flag.String("plugin", ".tools/protoc-gen-go", "protoc-gen-go binary")
	check := flag.Bool("check", false, "fail if the committed generated code differs instead of writing it")
	flag.Parse()
	stale, err := run(*dir, *plugin, *check)
	if err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
	for _, f := range stale {
		fmt.Fprintf(os.Stderr, "stale generated code: %s (run make proto)\n", filepath.Join(*dir, f))
	}
	if len(stale) > 0 {
		os.Exit(1)
	}
}

func run(dir, plugin string, check bool) ([]string, error) {
	files, err := protoFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .proto files under %s", dir)
	}
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{dir}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := c.Compile(context.Background(), files...)
	if err != nil {
		return nil, err
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: files, Parameter: proto.String("paths=source_relative")}
	seen := map[string]bool{}
	for _, f := range compiled {
		addWithDeps(req, f, seen)
	}
	resp, err := generate(plugin, req)
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, out := range resp.GetFile() {
		path := filepath.Join(dir, out.GetName())
		if check {
			have, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(have, []byte(out.GetContent())) {
				stale = append(stale, out.GetName())
			}
			continue
		}
		if err := os.WriteFile(path, []byte(out.GetContent()), 0o644); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// protoFiles lists the .proto files under dir, relative to it, sorted.
func protoFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".proto") {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// addWithDeps appends f after its imports: a CodeGeneratorRequest lists
// every file a generated one needs, dependencies first.
func addWithDeps(req *pluginpb.CodeGeneratorRequest, f protoreflect.FileDescriptor, seen map[string]bool) {
	if seen[f.Path()] {
		return
	}
	seen[f.Path()] = true
	imports := f.Imports()
	for i := 0; i < imports.Len(); i++ {
		addWithDeps(req, imports.Get(i).FileDescriptor, seen)
	}
	req.ProtoFile = append(req.ProtoFile, protodesc.ToFileDescriptorProto(f))
}

// generate runs the plugin as protoc would.
func generate(plugin string, req *pluginpb.CodeGeneratorRequest) (*pluginpb.CodeGeneratorResponse, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(plugin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", plugin, err, strings.TrimSpace(stderr.String()))
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("%s: unreadable answer: %w", plugin, err)
	}
	if msg := resp.GetError(); msg != "" {
		return nil, errors.New(msg)
	}
	return &resp, nil
}
