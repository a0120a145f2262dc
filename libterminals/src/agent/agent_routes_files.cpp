// The agent's /files/* routes. Filled in by the file-route step.

#include "agent/agent_internal.hpp"

namespace terminals::detail {

void add_file_routes(AgentRouter&, AgentState&) {}

}  // namespace terminals::detail
