// Package mock holds function-field mocks of the root package's interfaces,
// shared by the unit tests of every part. Each method forwards to its
// ...Fn field; a test sets only the fields it expects to be called, and a
// call to an unset field panics so that an unexpected call is loud.
package mock
