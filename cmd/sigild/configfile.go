package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// fileValue is a setting's value in the config file, as written.
type fileValue struct {
	text string
	line int
}

// maxConfigFileBytes is the largest config file read.
const maxConfigFileBytes = 1 << 20

// readConfigFile reads the YAML config file at path: one mapping from
// setting names to single values. Unknown keys, keys given twice, and
// values that are lists, mappings or null are refused, each error naming
// the file, the line and the key; all of them are reported together, with
// the good values.
//
// The values are kept as written, not as YAML would type them, so that
// "hsm-token-label: 0123" is the label 0123; the flag of each setting
// parses its value.
func readConfigFile(path string, settings []setting) (map[string]fileValue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if len(b) > maxConfigFileBytes {
		return nil, fmt.Errorf("--config %s: larger than %d bytes", path, maxConfigFileBytes)
	}
	values, errs := parseConfigFile(b, settings)
	for i, err := range errs {
		errs[i] = fmt.Errorf("--config %s: %w", path, err)
	}
	return values, errors.Join(errs...)
}

// parseConfigFile parses a config file's content; see readConfigFile.
func parseConfigFile(b []byte, settings []setting) (map[string]fileValue, []error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	values := make(map[string]fileValue)
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return values, nil // empty, or only comments
	} else if err != nil {
		return nil, []error{err}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, []error{errors.New("more than one YAML document; want one")}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, []error{fmt.Errorf("line %d: want a mapping of settings (key: value)", root.Line)}
	}
	known := make(map[string]bool)
	for _, s := range settings {
		known[s.name] = true
	}
	seen := make(map[string]int) // key -> line
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		at := fmt.Sprintf("line %d: %s", k.Line, key)
		switch {
		case k.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("line %d: a key must be a setting name", k.Line))
			continue
		case key == "config":
			errs = append(errs, fmt.Errorf("%s: a config file cannot name another config file", at))
			continue
		case !known[key]:
			errs = append(errs, fmt.Errorf("%s: unknown setting (the keys are the flag names without --; see sigild --help)", at))
			continue
		}
		if first, ok := seen[key]; ok {
			errs = append(errs, fmt.Errorf("%s: set twice (first on line %d)", at, first))
			continue
		}
		seen[key] = k.Line
		switch {
		case v.Kind == yaml.AliasNode || v.Kind == yaml.SequenceNode || v.Kind == yaml.MappingNode:
			errs = append(errs, fmt.Errorf("%s: want a single plain value, not a list, a mapping or an alias", at))
		case v.Tag == "!!null":
			errs = append(errs, fmt.Errorf("%s: no value", at))
		default:
			values[key] = fileValue{text: v.Value, line: k.Line}
		}
	}
	return values, errs
}
