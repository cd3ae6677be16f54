// Drives `eddy serve` with the third-party `braze-api` (npm) and checks the profiles.
// Usage: node braze_api_check.mjs BASE_URL REST_KEY
import { Braze } from 'braze-api'

const [url, key] = process.argv.slice(2)
const braze = new Braze(url, key)

function check(condition, message) {
  if (!condition) {
    console.error(`braze-api check failed: ${message}`)
    process.exit(1)
  }
}

const show = (v) => JSON.stringify(v)

const tracked = await braze.users.track({
  attributes: [{ external_id: 'js-1', first_name: 'Grace', favorite: ['tea'], dob: '1906-12-09' }],
  events: [{ external_id: 'js-1', name: 'opened', time: '2024-01-01T00:00:00Z', properties: { n: 1 } }],
})
check(tracked.message === 'success' && tracked.attributes_processed === 1, `track ${show(tracked)}`)

const alias = { alias_name: 'amp-42', alias_label: 'amplitude_id' }
const created = await braze.users.alias.new({ user_aliases: [alias] })
check(created.message === 'success' && created.aliases_processed === 1, `alias new ${show(created)}`)
await braze.users.track({ attributes: [{ user_alias: alias, from_alias: 'yes' }] })
await braze.users.track({ events: [{ user_alias: alias, name: 'opened', time: '2023-06-01T00:00:00Z' }] })

const identified = await braze.users.identify({ aliases_to_identify: [{ external_id: 'js-1', user_alias: alias }] })
check(identified.message === 'success', `identify ${show(identified)}`)

let exported = await braze.users.export.ids({ external_ids: ['js-1'] })
let user = exported.users[0]
check(user.first_name === 'Grace', `first_name ${show(user)}`)
check(user.dob === '1906-12-09', `dob ${show(user)}`)
check(user.custom_attributes.from_alias === 'yes', `alias attributes merged ${show(user)}`)
check(user.custom_events[0].count === 2, `event history merged ${show(user)}`)
check(user.user_aliases.length === 1 && user.user_aliases[0].alias_name === 'amp-42', `alias moved ${show(user)}`)

await braze.users.track({ attributes: [{ external_id: 'js-2', only_on_two: 7 }] })
const merged = await braze.users.merge({
  merge_updates: [{ identifier_to_merge: { external_id: 'js-2' }, identifier_to_keep: { external_id: 'js-1' } }],
})
check(merged.message === 'success', `merge ${show(merged)}`)
exported = await braze.users.export.ids({ external_ids: ['js-1', 'js-2'] })
check(exported.users.length === 1 && exported.users[0].custom_attributes.only_on_two === 7, `merge result ${show(exported)}`)
check(show(exported.invalid_user_ids) === show(['js-2']), `merged user is gone ${show(exported)}`)

const renamed = await braze.users.alias.update({
  alias_updates: [{ alias_label: 'amplitude_id', old_alias_name: 'amp-42', new_alias_name: 'amp-43' }],
})
check(renamed.message === 'success', `alias update ${show(renamed)}`)

const deleted = await braze.users.delete({ external_ids: ['js-1'] })
check(deleted.deleted === 1, `delete ${show(deleted)}`)
exported = await braze.users.export.ids({ external_ids: ['js-1'] })
check(exported.users.length === 0, `deleted user still exported ${show(exported)}`)
console.log('braze-api (npm): all checks passed')
