package server

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/kvtx/kvtx/txn"
)

// LoadConfig reads a YAML cluster config. Fields the file leaves out take their defaults; an
// unknown field is an error, so a typo does not silently fall back to a default.
func LoadConfig(path string) (txn.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return txn.Config{}, fmt.Errorf("server: read config: %w", err)
	}
	var c txn.Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return txn.Config{}, fmt.Errorf("server: parse config %s: %w", path, err)
	}
	return c.WithDefaults(), nil
}
