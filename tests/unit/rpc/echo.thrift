// A tiny service for testing common/rpc without depending on the product's IDL.
namespace cpp tx.rpc_test

exception EchoError {
  1: string message
}

service Echo {
  string Echo(1: string message),
  // Replies with `size` bytes: for replies over the client's size bound.
  binary Blob(1: i32 size),
  // Sleeps before replying: for receive timeouts.
  void Sleep(1: i32 ms),
  // Throws EchoError (a declared exception, i.e. a normal reply).
  void Fail(1: string message) throws (1: EchoError error),
  // Throws an undeclared exception in the handler (the server answers TApplicationException).
  void Crash(),
}
