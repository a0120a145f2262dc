// The agent's /ports and /proxy routes. (Being written: registers nothing yet.)
#include "agent/agent_internal.hpp"

namespace terminals::detail {

void add_port_routes(AgentRouter&, const std::shared_ptr<AgentState>&) {}

}  // namespace terminals::detail
