package govchain

//go:generate sh -c "PATH=$(go env GOPATH)/bin:../bin:$PATH protoc --go_out=. --go_opt=paths=source_relative govchain.proto"
