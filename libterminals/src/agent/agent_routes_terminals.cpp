// The agent's /api/terminals REST routes. (Being written: registers nothing yet.)
#include "agent/agent_internal.hpp"

namespace terminals::detail {

void add_terminal_routes(AgentRouter&, const std::shared_ptr<AgentState>&) {}

}  // namespace terminals::detail
