// TXCLIENT_EXPORT marks what libtxclient.so exports. The library is built with hidden
// visibility, so everything not marked stays inside it.

#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define TXCLIENT_EXPORT __attribute__((visibility("default")))
#else
#define TXCLIENT_EXPORT
#endif
