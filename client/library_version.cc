// libtxclient.so's own translation unit. Everything else comes from the tx_client archive,
// linked in whole (client/CMakeLists.txt); a shared library target needs at least one source.
#include "txclient/client.h"
