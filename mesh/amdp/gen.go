package amdp

// Regenerating needs protoc and protoc-gen-go v1.36.12 on PATH
// (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
// The generated amdp.pb.go is committed so that builds need neither.

//go:generate protoc --go_out=. --go_opt=paths=source_relative amdp.proto
