//! The generator's tables: the category tree (companies, product families, products, update
//! classifications), the languages of localized text, and the names, drivers and files that
//! updates are made of.
//!
//! Ids and names are the real ones of the public catalog, so generated catalogs look like the
//! fixtures and exercise the same category tree; the exception is the fictional third-party
//! vendor "Contoso", whose ids are fixed version-4 GUIDs made up for sitesync. Nothing here
//! is random: [`Taxonomy`] turns the tables into the category documents that open every
//! catalog and the parsed ids updates point at.

use crate::model::{CategoryType, UpdateId};

use super::timeline::{DAY_MS, iso8601, year_start};

const MICROSOFT: &str = "56309036-4c77-4dd9-951a-99ee9c246a94";
const CONTOSO: &str = "c0a1e7d4-5b2f-4e8a-9c31-7d2b6f4e8a10";
/// The publisher ids of the fixtures: categories, and software updates.
pub(super) const MICROSOFT_CATEGORY_PUBLISHER: &str = "42f20e12-2856-447d-a8b2-68f06c2e9b45";
pub(super) const MICROSOFT_UPDATE_PUBLISHER: &str = "bccf8ca0-2819-4598-8d15-c1506e363e92";
pub(super) const THIRD_PARTY_PUBLISHER_ID: &str = "3c5e7a9b-1d2f-4a6c-8e0b-2d4f6a8c0e1f";

/// `(id, revision, name, created)` of a company.
#[rustfmt::skip]
const COMPANIES: [(&str, u32, &str, &str); 2] = [
    (MICROSOFT, 101, "Microsoft", "2005-09-22T00:05:11.471Z"),
    (CONTOSO, 100, "Contoso Ltd", "2008-06-12T09:14:03.507Z"),
];

const WINDOWS: &str = "6964aab4-c5b5-43bd-a17d-ffb4346a8e1d";
const OFFICE: &str = "477b856e-65c4-4473-b621-a8b230bb70d9";
const SQL_SERVER: &str = "0a4c6c73-8887-4d7f-9cbe-d08fa8fa9d1e";
const EXCHANGE: &str = "352f9494-d516-4b40-a21a-cd2416098982";
const FOREFRONT: &str = "f8c3c9a9-10de-4f09-bc16-5eb1b861fb4c";
const SYSTEM_CENTER: &str = "26a5d0a5-b108-46f1-93fa-f2a9cf10d029";
const SMS: &str = "78f4e068-1609-4e7a-ac8e-174288fa70a1";
const DEVELOPER_TOOLS: &str = "48ce8c86-6850-4f68-8e9d-7dc8535ced60";
const SILVERLIGHT: &str = "fe729f7e-3945-11dc-8e0c-cd1356d89593";

/// `(id, revision, name, company, created)` of a product family.
#[rustfmt::skip]
const FAMILIES: [(&str, u32, &str, &str, &str); 9] = [
    (WINDOWS, 100, "Windows", MICROSOFT, "2004-05-15T05:50:01.611Z"),
    (OFFICE, 100, "Office", MICROSOFT, "2004-05-15T05:52:17.340Z"),
    (SQL_SERVER, 100, "SQL Server", MICROSOFT, "2004-07-09T21:03:45.002Z"),
    (EXCHANGE, 100, "Exchange", MICROSOFT, "2004-07-09T21:05:12.877Z"),
    (FOREFRONT, 101, "Forefront", MICROSOFT, "2007-04-17T16:40:33.215Z"),
    (SYSTEM_CENTER, 100, "System Center", MICROSOFT, "2007-05-22T11:31:08.664Z"),
    (SMS, 100, "Systems Management Server", MICROSOFT, "2004-11-30T08:12:55.390Z"),
    (DEVELOPER_TOOLS, 100, "Developer Tools, Runtimes, and Redistributables", MICROSOFT, "2006-02-14T19:27:41.908Z"),
    (SILVERLIGHT, 100, "Silverlight", MICROSOFT, "2007-09-04T17:48:29.131Z"),
];

/// How updates of a product look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    /// Windows releases up to Server 2003: `<stem>-KB<n>-x86-ENU.exe`.
    WindowsClassic,
    /// Vista and later: `<stem>-KB<n>-x64.msu`.
    WindowsModern,
    /// Office: `<stem>-kb<n>-fullfile-x86-glb.exe`.
    Office,
    /// Server products and tools: `<stem>-KB<n>-x86-ENU.exe`.
    ServerApp,
    /// Antimalware definitions.
    Definitions,
    /// A third-party vendor's line-of-business applications (MSI packages).
    LineOfBusiness,
    /// A third-party vendor's catalog.
    ThirdParty,
}

pub(super) struct ProductDef {
    id: &'static str,
    pub(super) name: &'static str,
    parent: &'static str,
    pub(super) flavor: Flavor,
    /// Years in which the product gets updates.
    pub(super) years: (i32, i32),
    /// Relative share of the updates published while it is active.
    pub(super) weight: u64,
    /// File-name stem.
    pub(super) stem: &'static str,
}

const fn product(
    id: &'static str,
    name: &'static str,
    parent: &'static str,
    flavor: Flavor,
    years: (i32, i32),
    weight: u64,
    stem: &'static str,
) -> ProductDef {
    ProductDef {
        id,
        name,
        parent,
        flavor,
        years,
        weight,
        stem,
    }
}

use Flavor::*;

#[rustfmt::skip]
pub(super) const PRODUCTS: [ProductDef; 30] = [
    product("3b4b8621-726e-43a6-b43b-37d07ec7019f", "Windows 2000", WINDOWS, WindowsClassic, (2004, 2010), 6, "Windows2000"),
    product("558f4bc3-4827-49e1-accf-ea79fd72d4c9", "Windows XP", WINDOWS, WindowsClassic, (2004, 2014), 12, "WindowsXP"),
    product("4cb6ebd5-e38a-4826-9f76-1416a6f563b0", "Windows XP x64 Edition", WINDOWS, WindowsClassic, (2005, 2014), 4, "WindowsServer2003.WindowsXP"),
    product("dbf57a08-0d5a-46ff-b30c-7715eb9498e9", "Windows Server 2003", WINDOWS, WindowsClassic, (2004, 2015), 10, "WindowsServer2003"),
    product("26997d30-08ce-4f25-b2de-699c36a8033a", "Windows Vista", WINDOWS, WindowsModern, (2007, 2017), 9, "Windows6.0"),
    product("ba0ae9cc-5f01-40b4-ac3f-50192b5d6aaf", "Windows Server 2008", WINDOWS, WindowsModern, (2008, 2025), 8, "Windows6.0"),
    product("bfe5b177-a086-47a0-b102-097e4fa1f807", "Windows 7", WINDOWS, WindowsModern, (2009, 2023), 12, "Windows6.1"),
    product("fdfe8200-9d98-44ba-a12a-772282bf60ef", "Windows Server 2008 R2", WINDOWS, WindowsModern, (2009, 2025), 10, "Windows6.1"),
    product("6407468e-edc7-4ecd-8c32-521f64cee65e", "Windows 8.1", WINDOWS, WindowsModern, (2013, 2023), 9, "Windows8.1"),
    product("d31bd4c3-d872-41c9-a2e7-231f372588cb", "Windows Server 2012 R2", WINDOWS, WindowsModern, (2013, 2025), 9, "Windows8.1"),
    product("8c3fcc84-7410-4a95-8b89-a166a0190486", "Windows Defender", WINDOWS, Definitions, (2006, 2025), 10, "mpas-fe"),
    product("1403f223-a63f-f572-82ba-c92391218055", "Office 2003", OFFICE, Office, (2004, 2014), 6, "office2003"),
    product("041e4f9f-3a3d-4f58-8b2f-5e6fe95c4591", "Office 2007", OFFICE, Office, (2007, 2017), 7, "office2007"),
    product("84f5f325-30d7-41c4-81d1-87a0e6535b66", "Office 2010", OFFICE, Office, (2010, 2020), 7, "office2010"),
    product("704a0a4a-518f-4d69-9e03-10ba44198bd5", "Office 2013", OFFICE, Office, (2013, 2023), 6, "office2013"),
    product("7145181b-9556-4b11-b659-0162fa9df11f", "SQL Server 2000", SQL_SERVER, ServerApp, (2004, 2013), 2, "SQL2000"),
    product("60916385-7546-4e9b-836e-79d65e517bab", "SQL Server 2005", SQL_SERVER, ServerApp, (2006, 2016), 3, "SQLServer2005"),
    product("c5f0b23c-e990-4b71-9808-718d353f533a", "SQL Server 2008", SQL_SERVER, ServerApp, (2008, 2019), 3, "SQLServer2008"),
    product("56750722-19b4-4449-a547-5b68f19eee38", "Microsoft SQL Server 2012", SQL_SERVER, ServerApp, (2012, 2022), 3, "SQLServer2012"),
    product("3cf32f7c-d8ee-43f8-a0da-8b88a6f8af1a", "Exchange Server 2003", EXCHANGE, ServerApp, (2004, 2014), 2, "Exchange2003"),
    product("26bb6be1-37d1-4ca6-baee-ec00b2f7d0f1", "Exchange Server 2007", EXCHANGE, ServerApp, (2007, 2017), 3, "Exchange2007"),
    product("9b135dd5-fc75-4609-a6ae-fb5d22333ef0", "Exchange Server 2010", EXCHANGE, ServerApp, (2010, 2020), 3, "Exchange2010"),
    product("0a487050-8b0f-4f81-b401-be4ceacd61cd", "Forefront Client Security", FOREFRONT, Definitions, (2007, 2015), 5, "mp_ambits"),
    product("d22b3d16-bc75-418f-b648-e5f3d32490ee", "System Center Configuration Manager 2007", SYSTEM_CENTER, ServerApp, (2007, 2019), 2, "ConfigMgr2007"),
    product("5a456666-3ac5-4162-9f52-260885d6533a", "Systems Management Server 2003", SMS, ServerApp, (2004, 2010), 1, "SMS2003"),
    product("a0dd7e72-90ec-41e3-b370-c86a245cd44f", "Visual Studio 2005", DEVELOPER_TOOLS, ServerApp, (2006, 2016), 2, "VS80sp1"),
    product("e3fde9f8-14d6-4b5c-911c-fba9e0fc9887", "Visual Studio 2008", DEVELOPER_TOOLS, ServerApp, (2008, 2018), 2, "VS90sp1"),
    product("9f3dd20a-1004-470e-ba65-3dc62d982958", "Silverlight", SILVERLIGHT, ServerApp, (2008, 2021), 2, "Silverlight"),
    product("5cc25303-143f-40f3-a2ff-803a1db69955", "Contoso Line-of-Business Apps", CONTOSO, LineOfBusiness, (2007, 2025), 3, ""),
    product("5b1e0a6c-8d2f-4c3b-a4e5-f6a7b8c9d0e1", "Contoso Line-of-Business Suite", CONTOSO, ThirdParty, (2008, 2025), 2, "ContosoLOB"),
];

/// The update classifications the generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Critical,
    Security,
    Definition,
    Updates,
    ServicePacks,
    UpdateRollups,
    FeaturePacks,
    Tools,
    Drivers,
}

/// `(class, id, name, created)`, real classification ids.
#[rustfmt::skip]
const CLASSIFICATIONS: [(Class, &str, &str, &str); 9] = [
    (Class::Critical, "e6cf1350-c01b-414d-a61f-263d14d133b4", "Critical Updates", "2004-01-15T19:32:06.383Z"),
    (Class::Security, "0fa1201d-4330-4fa8-8ae9-b877473b6441", "Security Updates", "2004-01-15T19:32:28.617Z"),
    (Class::Definition, "e0789628-ce08-4437-be74-2495b842f43b", "Definition Updates", "2005-12-01T22:02:11.104Z"),
    (Class::Updates, "cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83", "Updates", "2004-01-15T19:33:14.958Z"),
    (Class::ServicePacks, "68c5b0a3-d1a6-4553-ae49-01d3a7827828", "Service Packs", "2004-01-15T19:33:40.249Z"),
    (Class::UpdateRollups, "28bc880e-0592-4cbf-8f95-c79b17911d5f", "Update Rollups", "2004-01-15T19:34:02.776Z"),
    (Class::FeaturePacks, "b54e7d24-7add-428f-8b75-90a396fa584f", "Feature Packs", "2004-01-15T19:34:27.302Z"),
    (Class::Tools, "b4832bd8-e735-4761-8daf-37f882276dab", "Tools", "2004-01-15T19:34:49.811Z"),
    (Class::Drivers, "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0", "Drivers", "2005-04-28T17:57:30.521Z"),
];

/// How many category documents open every catalog: one per company, product family, product
/// and classification.
pub(super) const CATEGORY_DOCUMENTS: usize =
    COMPANIES.len() + FAMILIES.len() + PRODUCTS.len() + CLASSIFICATIONS.len();

/// One language of localized properties: the language tag and the title and description
/// templates (`{p}` is the product).
pub(super) struct Lang {
    pub(super) tag: &'static str,
    pub(super) security: &'static str,
    pub(super) update: &'static str,
    pub(super) description: &'static str,
}

const fn lang(
    tag: &'static str,
    security: &'static str,
    update: &'static str,
    description: &'static str,
) -> Lang {
    Lang {
        tag,
        security,
        update,
        description,
    }
}

/// The 24 languages of the category fixtures, in their order.
#[rustfmt::skip]
pub(super) const LANGUAGES: [Lang; 24] = [
    lang("ar", "تحديث أمان لـ {p}", "تحديث لـ {p}", "قم بتثبيت هذا التحديث للمساعدة في حماية الكمبيوتر."),
    lang("cs", "Aktualizace zabezpečení pro {p}", "Aktualizace pro {p}", "Nainstalujte tuto aktualizaci, která pomůže chránit váš počítač."),
    lang("da", "Sikkerhedsopdatering til {p}", "Opdatering til {p}", "Installer denne opdatering for at beskytte computeren."),
    lang("de", "Sicherheitsupdate für {p}", "Update für {p}", "Installieren Sie dieses Update, um Ihren Computer zu schützen."),
    lang("el", "Ενημέρωση ασφαλείας για {p}", "Ενημέρωση για {p}", "Εγκαταστήστε αυτήν την ενημέρωση για να προστατέψετε τον υπολογιστή σας."),
    lang("en", "Security Update for {p}", "Update for {p}", ""),
    lang("es", "Actualización de seguridad para {p}", "Actualización para {p}", "Instale esta actualización para ayudar a proteger el equipo."),
    lang("fi", "Suojauspäivitys: {p}", "Päivitys: {p}", "Asenna tämä päivitys tietokoneen suojaamiseksi."),
    lang("fr", "Mise à jour de sécurité pour {p}", "Mise à jour pour {p}", "Installez cette mise à jour pour protéger votre ordinateur."),
    lang("he", "עדכון אבטחה עבור {p}", "עדכון עבור {p}", "התקן עדכון זה כדי לסייע בהגנה על המחשב שלך."),
    lang("hu", "Biztonsági frissítés – {p}", "Frissítés – {p}", "A számítógép védelme érdekében telepítse ezt a frissítést."),
    lang("it", "Aggiornamento della protezione per {p}", "Aggiornamento per {p}", "Installare questo aggiornamento per proteggere il computer."),
    lang("ja", "{p} セキュリティ更新プログラム", "{p} 更新プログラム", "この更新プログラムをインストールすると、コンピューターを保護できます。"),
    lang("ko", "{p} 보안 업데이트", "{p} 업데이트", "컴퓨터를 보호하려면 이 업데이트를 설치하십시오."),
    lang("nl", "Beveiligingsupdate voor {p}", "Update voor {p}", "Installeer deze update om uw computer te beschermen."),
    lang("no", "Sikkerhetsoppdatering for {p}", "Oppdatering for {p}", "Installer denne oppdateringen for å beskytte datamaskinen."),
    lang("pl", "Aktualizacja zabezpieczeń dla {p}", "Aktualizacja dla {p}", "Zainstaluj tę aktualizację, aby chronić komputer."),
    lang("pt", "Actualização de segurança para {p}", "Actualização para {p}", "Instale esta actualização para ajudar a proteger o computador."),
    lang("pt-br", "Atualização de segurança para {p}", "Atualização para {p}", "Instale esta atualização para ajudar a proteger o computador."),
    lang("ru", "Обновление безопасности для {p}", "Обновление для {p}", "Установите это обновление для защиты компьютера."),
    lang("sv", "Säkerhetsuppdatering för {p}", "Uppdatering för {p}", "Installera den här uppdateringen för att skydda datorn."),
    lang("tr", "{p} için güvenlik güncelleştirmesi", "{p} için güncelleştirme", "Bilgisayarınızı korumaya yardımcı olmak için bu güncelleştirmeyi yükleyin."),
    lang("zh-cn", "{p} 安全更新", "{p} 更新", "安装此更新有助于保护您的计算机。"),
    lang("zh-tw", "{p} 安全性更新", "{p} 更新", "安裝此更新以協助保護您的電腦。"),
];
pub(super) const EN: usize = 5;
pub(super) const EN_ONLY: u32 = 1 << EN;

pub(super) const SECURITY_DESCRIPTION: &str = "A security issue has been identified that could allow an unauthenticated remote attacker to compromise your system and gain control over it. You can help protect your system by installing this update from Microsoft. After you install this update, you may have to restart your system.";
pub(super) const UPDATE_DESCRIPTION: &str = "Install this update to resolve issues in {p}. For a complete listing of the issues that are included in this update, see the associated Microsoft Knowledge Base article for more information. After you install this item, you may have to restart your computer.";
pub(super) const DEFINITION_DESCRIPTION: &str = "Install this update to revise the definition files that are used to detect viruses, spyware, and other potentially unwanted software. Once you have installed this item, it cannot be removed.";

/// `(manufacturer, class, device, hardware id with {} for a device number)`.
#[rustfmt::skip]
pub(super) const DRIVERS: [(&str, &str, &str, &str); 6] = [
    ("Intel", "Display", "Intel(R) HD Graphics", "PCI\\VEN_8086&DEV_{}"),
    ("Realtek", "Net", "Realtek PCIe GBE Family Controller", "PCI\\VEN_10EC&DEV_{}"),
    ("NVIDIA", "Display", "NVIDIA GeForce", "PCI\\VEN_10DE&DEV_{}"),
    ("Broadcom", "Net", "Broadcom NetXtreme Gigabit Ethernet", "PCI\\VEN_14E4&DEV_{}"),
    ("Synaptics", "Mouse", "Synaptics PS/2 Port TouchPad", "ACPI\\SYN{}"),
    ("Hewlett-Packard", "Printer", "HP LaserJet & Color LaserJet", "USBPRINT\\HEWLETT-PACKARDHP_LA{}"),
];

pub(super) const LOCAL_APPS: [&str; 5] = [
    "Contoso Expense Client",
    "Fabrikam Timesheet",
    "Northwind Inventory Agent",
    "Adatum VPN Client",
    "Litware Document Viewer",
];

pub(super) const SYSTEM_FILES: [&str; 16] = [
    "kernel32.dll",
    "ntdll.dll",
    "mshtml.dll",
    "win32k.sys",
    "netapi32.dll",
    "gdiplus.dll",
    "msxml6.dll",
    "schannel.dll",
    "tcpip.sys",
    "srv.sys",
    "wininet.dll",
    "urlmon.dll",
    "rpcrt4.dll",
    "ole32.dll",
    "user32.dll",
    "mscorlib.dll",
];

/// The category documents and the products and classifications updates point at, with
/// parsed ids.
pub(super) struct Taxonomy {
    pub(super) categories: Vec<CategoryDoc>,
    /// Parallel to `PRODUCTS`.
    pub(super) products: Vec<UpdateId>,
    /// Parallel to `CLASSIFICATIONS`.
    classifications: Vec<UpdateId>,
}

pub(super) struct CategoryDoc {
    pub(super) id: UpdateId,
    pub(super) revision: u32,
    pub(super) category_type: CategoryType,
    pub(super) name: &'static str,
    pub(super) parent: Option<UpdateId>,
    pub(super) created: String,
    pub(super) display_order: usize,
}

fn known_id(text: &str) -> UpdateId {
    text.parse()
        .unwrap_or_else(|_| panic!("built-in category id {text} is not a GUID"))
}

impl Taxonomy {
    pub(super) fn new() -> Self {
        let mut categories = Vec::with_capacity(CATEGORY_DOCUMENTS);
        for (order, (id, revision, name, created)) in COMPANIES.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: *revision,
                category_type: CategoryType::Company,
                name,
                parent: None,
                created: (*created).to_owned(),
                display_order: order + 1,
            });
        }
        for (order, (id, revision, name, company, created)) in FAMILIES.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: *revision,
                category_type: CategoryType::ProductFamily,
                name,
                parent: Some(known_id(company)),
                created: (*created).to_owned(),
                display_order: order + 2,
            });
        }
        for (order, def) in PRODUCTS.iter().enumerate() {
            // A product category appears some weeks before its first updates.
            let created = year_start(def.years.0) - (40 + order as i64) * DAY_MS
                + (order as i64 * 7_919_113) % DAY_MS;
            categories.push(CategoryDoc {
                id: known_id(def.id),
                revision: 100,
                category_type: CategoryType::Product,
                name: def.name,
                parent: Some(known_id(def.parent)),
                created: iso8601(created),
                display_order: order + 1,
            });
        }
        for (order, (_, id, name, created)) in CLASSIFICATIONS.iter().enumerate() {
            categories.push(CategoryDoc {
                id: known_id(id),
                revision: 100,
                category_type: CategoryType::UpdateClassification,
                name,
                parent: None,
                created: (*created).to_owned(),
                display_order: order + 1,
            });
        }
        Self {
            categories,
            products: PRODUCTS.iter().map(|p| known_id(p.id)).collect(),
            classifications: CLASSIFICATIONS.iter().map(|c| known_id(c.1)).collect(),
        }
    }

    pub(super) fn classification(&self, class: Class) -> UpdateId {
        let index = CLASSIFICATIONS
            .iter()
            .position(|c| c.0 == class)
            .unwrap_or_else(|| unreachable!("every class is in CLASSIFICATIONS"));
        self.classifications[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taxonomy_parses() {
        let tax = Taxonomy::new();
        assert_eq!(tax.categories.len(), CATEGORY_DOCUMENTS);
    }
}
